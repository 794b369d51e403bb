#!/usr/bin/env python3
"""make_reference_models.py — tiny random Hugging Face checkpoints + reference logits.

Builds small GPT-2, Qwen2, LLaMA and Mistral models with transformers' own classes (random
weights, fixed seed), saves them with save_pretrained(safe_serialization=True) into
tests/data/ref/<name>/, and writes tests/data/ref/<name>/expected.txt with the logits that
transformers computes for a fixed 20-token sequence.  tests/test_reference.c runs qlm on the
same folders and compares.

The logits are always computed in float32.  For the BF16/F16 copies the weights are first
rounded to that type (which is what lands in the file) and then upcast to float32, because qlm
upcasts half-precision weights and computes in f32; the reference therefore matches the file's
exact values.

Usage (see tools/requirements.txt):
    python3 -m venv /root/.cache/qlm/venv-ref
    /root/.cache/qlm/venv-ref/bin/pip install -r tools/requirements.txt
    /root/.cache/qlm/venv-ref/bin/python tools/make_reference_models.py [out_dir]

expected.txt format (whitespace separated, lines starting with '#' are comments):
    tokens N id_0 ... id_{N-1}
    logits T V
    T lines of V floats (%.8e): the logits of position t (after tokens 0..t)
"""
import json
import math
import os
import shutil
import sys

import torch
import transformers
from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM,
                          MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM)

SEED = 20240611
VOCAB = 96
TOKENS = None  # fixed sequence, drawn once in main()


def reinit(model, gen):
    """Replace the default init (std 0.02, which makes every activation tiny and the logits
    nearly uniform) by one that keeps activations O(1): matrices ~ N(0, 1/fan_in), norm gains
    ~ 1 + N(0, 0.1), biases ~ N(0, 0.1), embeddings ~ N(0, 0.5)."""
    conv1d = getattr(transformers.pytorch_utils, "Conv1D", None)
    fan_in_first = set()  # GPT-2 Conv1D weights are [in, out]
    for mname, mod in model.named_modules():
        if conv1d is not None and isinstance(mod, conv1d):
            fan_in_first.add(mname + ".weight")
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if p.dim() == 1 and name.endswith("weight"):      # RMSNorm / LayerNorm gain
                p.copy_(1.0 + 0.1 * r)
            elif p.dim() == 1:                                 # bias
                p.copy_(0.1 * r)
            elif "embed" in name or name.endswith(("wte.weight", "wpe.weight")):
                p.copy_(0.5 * r)
            else:
                fan_in = p.shape[0] if name in fan_in_first else p.shape[1]
                p.copy_(r / math.sqrt(fan_in))


def make_model(kind, gen):
    common = dict(vocab_size=VOCAB)
    if kind == "gpt2":
        cfg = GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, n_inner=64,
                         bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1, **common)
        cls = GPT2LMHeadModel
    elif kind == "gpt2-default-inner":
        # n_inner null (as in the real gpt2 config.json): the FFN is 4*n_embd wide.
        cfg = GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, n_inner=None,
                         bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1, **common)
        cls = GPT2LMHeadModel
    elif kind == "qwen2":
        cfg = Qwen2Config(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                          rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=False, **common)
        cls = Qwen2ForCausalLM
    elif kind == "llama":
        cfg = LlamaConfig(hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                          rope_theta=500000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, **common)
        cls = LlamaForCausalLM
    elif kind == "mistral":
        cfg = MistralConfig(hidden_size=32, intermediate_size=56, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=64,
                            rope_theta=1000000.0, rms_norm_eps=1e-5, sliding_window=4096,
                            tie_word_embeddings=False, **common)
        cls = MistralForCausalLM
    else:
        raise ValueError(kind)
    cfg._attn_implementation = "eager"  # the plain softmax(QK^T)V reference path
    model = cls(cfg).to(torch.float32).eval()
    reinit(model, gen)
    return model


def logits_f32(model, dtype):
    """Round the weights to `dtype`, upcast back to f32, and run the token sequence."""
    # Only the parameters: model.to(dtype) would also round buffers such as RoPE's inv_freq,
    # which are not stored in the file and stay f32 when the checkpoint is loaded.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(dtype).to(torch.float32))
        ids = torch.tensor([TOKENS], dtype=torch.long)
        out = model(input_ids=ids, use_cache=False)
    return out.logits[0].to(torch.float32).numpy()


def write_expected(path, name, kind, dtype, logits):
    T, V = logits.shape
    with open(path, "w") as f:
        f.write(f"# {name}: reference logits from transformers {transformers.__version__} "
                f"(torch {torch.__version__}), {type_name(kind)}, eager attention, float32 compute.\n")
        if dtype != torch.float32:
            f.write(f"# Weights are stored as {str(dtype).split('.')[-1]}; the logits were computed "
                    f"from those rounded weights upcast to float32 (as qlm computes in f32).\n")
        f.write("# Format: 'tokens N ids...', 'logits T V', then T rows of V logits (row t = after tokens 0..t).\n")
        f.write("tokens %d %s\n" % (len(TOKENS), " ".join(str(t) for t in TOKENS)))
        f.write("logits %d %d\n" % (T, V))
        for row in logits:
            f.write(" ".join("%.8e" % float(x) for x in row) + "\n")


def cls_of(kind):
    return getattr(transformers, type_name(kind))


def check_reload(d, cls, logits):
    """Load the saved folder back (rewritten config included) in f32 and check it reproduces the
    logits: catches anything lost in save_pretrained or in the config rewrite (rope_theta, ties)."""
    m = cls.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        got = m(input_ids=torch.tensor([TOKENS], dtype=torch.long), use_cache=False).logits[0].numpy()
    diff = float(abs(got - logits).max())
    if diff > 1e-5:
        raise SystemExit(f"{d}: reloaded model differs from the saved one by {diff}")


def type_name(kind):
    return {"gpt2": "GPT2LMHeadModel", "gpt2-default-inner": "GPT2LMHeadModel", "qwen2": "Qwen2ForCausalLM",
            "llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM"}[kind]


def config_v4_style(path):
    """transformers 5 writes "rope_parameters": {"rope_theta": ..., "rope_type": "default"} and
    "dtype"; checkpoints published with transformers 4 (most of the Hub, and /work/shared) have a
    top-level "rope_theta" and "torch_dtype".  Rewrite to that older form: the model and its
    logits are unchanged, only how config.json spells them."""
    with open(path) as f:
        cfg = json.load(f)
    rp = cfg.pop("rope_parameters", None)
    if rp is not None:
        if rp.get("rope_type", "default") != "default" or set(rp) - {"rope_theta", "rope_type"}:
            raise ValueError(f"{path}: cannot express rope_parameters {rp} in the v4 form")
        cfg["rope_theta"] = rp["rope_theta"]
    if "dtype" in cfg:
        cfg["torch_dtype"] = cfg.pop("dtype")
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")


# name, architecture, storage dtype, max_shard_size (None = one file), config.json style
# ("v4": top-level rope_theta/torch_dtype; "v5": as transformers 5 writes it)
FIXTURES = [
    ("gpt2", "gpt2", torch.float32, None, "v4"),
    ("gpt2-f16", "gpt2-default-inner", torch.float16, None, "v4"),
    ("qwen2", "qwen2", torch.float32, None, "v4"),
    ("qwen2-f16", "qwen2", torch.float16, None, "v4"),
    ("qwen2-sharded", "qwen2", torch.float32, 40000, "v4"),
    ("llama", "llama", torch.float32, None, "v4"),
    ("llama-bf16", "llama", torch.bfloat16, None, "v4"),
    ("mistral", "mistral", torch.float32, None, "v5"),
]


def main():
    global TOKENS
    out_root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "ref")
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    # 20 ids covering both ends of the vocabulary.
    TOKENS = [0, VOCAB - 1] + torch.randint(1, VOCAB - 1, (18,), generator=gen).tolist()
    for name, kind, dtype, shard, style in FIXTURES:
        # Each fixture gets its own weights (seeded by its name) so copies are independent checks.
        g = torch.Generator().manual_seed(SEED + sum(ord(c) for c in name))
        model = make_model(kind, g)
        logits = logits_f32(model, dtype)
        d = os.path.join(out_root, name)
        shutil.rmtree(d, ignore_errors=True)
        save = model.to(dtype)
        kw = {"safe_serialization": True}
        if shard is not None:
            kw["max_shard_size"] = shard
        save.save_pretrained(d, **kw)
        for extra in ("generation_config.json",):
            p = os.path.join(d, extra)
            if os.path.exists(p):
                os.remove(p)
        if style == "v4":
            config_v4_style(os.path.join(d, "config.json"))
        write_expected(os.path.join(d, "expected.txt"), name, kind, dtype, logits)
        check_reload(d, cls_of(kind), logits)
        files = sorted(os.listdir(d))
        sizes = {f: os.path.getsize(os.path.join(d, f)) for f in files}
        print(f"{name}: {sizes}")


if __name__ == "__main__":
    main()
