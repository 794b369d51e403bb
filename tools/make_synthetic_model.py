#!/usr/bin/env python3
"""make_synthetic_model.py — a LLaMA-architecture GGUF with LLaMA-2-7B layer shapes but only a few
layers and seeded random weights, for decode/prefill speed benchmarks on the memory-bound case
(bench/synthetic-7b, issue 9).

Shapes are LLaMA-2-7B's (Touvron et al. 2023, table and config.json of meta-llama/Llama-2-7b-hf):
dim 4096, ffn 11008, 32 heads, 32 kv heads (no GQA), head dim 128, vocab 32000, rms eps 1e-5,
rope base 10000, context 4096.  Only block_count differs (--layers, default 4).

Weights: linear layers, token embedding and output head ~ N(0, std^2) with std 0.02 (the init
scale of LLaMA-style models; trained 7B weights have a similar per-matrix std), RMSNorm gains 1.
They are random, so the text is nonsense, but the tensors, their types and the work per token are
exactly those of a real model of this shape — which is all a speed benchmark reads.

The tokenizer is copied from a llama vocab-only GGUF (default: ../shared/tokenizers/llama.cpp-vocab/
ggml-vocab-llama-spm.gguf, LLaMA's 32000-token SentencePiece vocabulary), so qlm and llama.cpp
load it as a normal LLaMA model.

The file is written tensor by tensor (one tensor in memory at a time; ~4.3 GB for 4 layers in f32)
to a temporary file in the destination folder and renamed into place.

usage: make_synthetic_model.py -o OUT.gguf [--layers 4] [--type f32|f16] [--seed 1] [--vocab VOCAB.gguf]
"""
import argparse
import os
import sys
import tempfile

import numpy as np

try:
    import gguf
except ImportError:  # the venv of tools/requirements.txt has it
    sys.exit("make_synthetic_model.py: needs the gguf package (pip install gguf)")

DIM, FFN, HEADS, KV_HEADS, VOCAB, CTX = 4096, 11008, 32, 32, 32000, 4096
STD = 0.02


def tensor_shapes(layers):
    """(name, numpy shape [rows, cols]) in llama.cpp's order; a GGUF lists dims reversed (cols first)."""
    kv = DIM // HEADS * KV_HEADS
    out = [("token_embd.weight", (VOCAB, DIM))]
    for i in range(layers):
        p = f"blk.{i}."
        out += [(p + "attn_norm.weight", (DIM,)),
                (p + "attn_q.weight", (DIM, DIM)),
                (p + "attn_k.weight", (kv, DIM)),
                (p + "attn_v.weight", (kv, DIM)),
                (p + "attn_output.weight", (DIM, DIM)),
                (p + "ffn_norm.weight", (DIM,)),
                (p + "ffn_gate.weight", (FFN, DIM)),
                (p + "ffn_up.weight", (FFN, DIM)),
                (p + "ffn_down.weight", (DIM, FFN))]
    out += [("output_norm.weight", (DIM,)), ("output.weight", (VOCAB, DIM))]
    return out


def make_tensor(rng, name, shape, dtype):
    if name.endswith("norm.weight"):  # norms stay f32, as llama.cpp's converters write them
        return np.ones(shape, dtype=np.float32)
    # standard_normal in float32 chunks: 4096 x 11008 floats at a time at most
    return (rng.standard_normal(shape, dtype=np.float32) * np.float32(STD)).astype(dtype)


def copy_tokenizer(w, vocab_path):
    """Every tokenizer.* key of the vocab GGUF, with its type."""
    r = gguf.GGUFReader(vocab_path)
    n = 0
    for key, f in r.fields.items():
        if not key.startswith("tokenizer."):
            continue
        t = f.types[0]
        if t == gguf.GGUFValueType.ARRAY:
            sub = f.types[1]
            if sub == gguf.GGUFValueType.STRING:
                val = [bytes(f.parts[i]) for i in f.data]
            else:
                val = [f.parts[i][0].item() for i in f.data]
            w.add_key_value(key, val, t, sub_type=sub)
        elif t == gguf.GGUFValueType.STRING:
            w.add_key_value(key, bytes(f.parts[f.data[0]]).decode("utf-8"), t)
        else:
            w.add_key_value(key, f.parts[f.data[0]][0].item(), t)
        n += 1
    if n == 0:
        sys.exit(f"make_synthetic_model.py: {vocab_path}: no tokenizer.* keys (not a vocab GGUF)")
    toks = r.fields.get("tokenizer.ggml.tokens")
    if toks is None or len(toks.data) != VOCAB:
        sys.exit(f"make_synthetic_model.py: {vocab_path}: tokenizer.ggml.tokens must have {VOCAB} entries")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--type", choices=["f32", "f16"], default="f32")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--vocab", default=os.path.join(here, "..", "..", "shared", "tokenizers", "llama.cpp-vocab",
                                                    "ggml-vocab-llama-spm.gguf"))
    a = ap.parse_args()
    if not 1 <= a.layers <= 32:
        sys.exit("make_synthetic_model.py: --layers must be 1..32")
    if not os.path.isfile(a.vocab):
        sys.exit(f"make_synthetic_model.py: {a.vocab}: no such vocab GGUF (--vocab)")
    dtype = np.float32 if a.type == "f32" else np.float16

    out_dir = os.path.dirname(os.path.abspath(a.out))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(a.out) + ".tmp-", dir=out_dir)
    os.close(fd)
    try:
        w = gguf.GGUFWriter(tmp, "llama")
        w.add_name(f"synthetic-llama2-7b-shape-{a.layers}L")
        w.add_block_count(a.layers)
        w.add_context_length(CTX)
        w.add_embedding_length(DIM)
        w.add_feed_forward_length(FFN)
        w.add_head_count(HEADS)
        w.add_head_count_kv(KV_HEADS)
        w.add_rope_dimension_count(DIM // HEADS)
        w.add_rope_freq_base(10000.0)
        w.add_layer_norm_rms_eps(1e-5)
        w.add_vocab_size(VOCAB)
        w.add_file_type(gguf.LlamaFileType.ALL_F32 if a.type == "f32" else gguf.LlamaFileType.MOSTLY_F16)
        copy_tokenizer(w, a.vocab)
        shapes = tensor_shapes(a.layers)
        for name, shape in shapes:
            t = np.float32 if name.endswith("norm.weight") else dtype
            w.add_tensor_info(name, shape, np.dtype(t), int(np.prod(shape)) * np.dtype(t).itemsize)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        rng = np.random.default_rng(a.seed)
        for i, (name, shape) in enumerate(shapes):
            w.write_tensor_data(make_tensor(rng, name, shape, dtype))
            print(f"\r{i + 1}/{len(shapes)} {name}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        w.close()
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, a.out)
    except BaseException:
        os.unlink(tmp)
        raise


if __name__ == "__main__":
    main()
