#!/usr/bin/env python3
"""methods_reference.py — qlm's quantizers against the original Python implementations, on every
linear matrix of SmolLM2-135M (issue #4, "Reference check and benchmark").

For each method the original package quantizes the same f32 matrices with the same settings, and
its result is compared with the file `qlm quantize` wrote (read by tools/qlm_gguf.py):
  * code agreement: % of weights whose integer/float8/4-bit code equals the original's (the codes
    of deterministic methods should agree exactly; GPTQ's Hessians come from two different forward
    passes, so there a few codes near rounding ties may differ);
  * per-tensor relative error ||W - Q||_F / ||W||_F of qlm's and of the original's dequantized weights.

Originals (CPU, float32 unless the method's dtype says otherwise):
  hqq4     hqq 0.2.8 Quantizer.quantize(nbits=4, group_size=64, axis=1, round_zero=True, optimize=True)
           (BaseQuantizeConfig's 4-bit settings)  vs  qlm --method hqq --bits 4 --group 64
  qint8    optimum-quanto 0.2.7: AbsmaxOptimizer(axis=0) + quantize_weight on the f16 weight (what a
           QLinear does for a model loaded in float16)  vs  qlm --method quanto --opt weights=qint8
  qint4    MaxOptimizer with the group size a real QLinear picks (128, or 96 for rows of 576)
           vs  qlm --method quanto --opt weights=qint4
  qfloat8  AbsmaxOptimizer(qfloat8) + quantize_weight, f16  vs  qlm --method quanto --opt weights=qfloat8
  nf4 fp4  bitsandbytes 0.50 functional.quantize_4bit(blocksize=64) on the CPU tensor, and with
  nf4dq fp4dq  compress_statistics=True (double quantization)  vs  qlm --method nf4|fp4 [--dq]
  gptq4    AutoGPTQ 0.7.1's GPTQ class (auto_gptq/quantization/{gptq,quantizer}.py from the wheel,
           pure torch) run the way AutoGPTQ's quantize() runs it (true_sequential=True, its default:
           per layer [k,v,q] -> [o] -> [up,gate] -> [down], each group's Hessian taken after the
           groups before it were quantized): layer by layer on the HF transformers model (loaded
           from the same f32 GGUF), the Hessians from hooks on the layer's linears, fasterquant(blocksize 128, damp 0.01, group 128, sym,
           no act-order), the layer's weights replaced by the quantized ones before its outputs feed
           the next layer.  The calibration windows are qlm's: the same C4 text, tokenized by
           `qlm tokenize`, cut at the same splitmix64 offsets (src/quant/calib.c), default 16 x 512.
           vs  qlm --method gptq --bits 4 --group 128 --calib-samples 16 --calib-len 512
           (known differences: qlm stores a half scale, AutoGPTQ a float one; qlm runs in float64)

usage:
  methods_reference.py compare --qlm-dir DIR [--methods hqq4,nf4,...]   (DIR/<method>.gguf from qlm)
  methods_reference.py time --method M [--reps N]      time the original alone (for bench/methods-vs-python)
options: --model F32.gguf (default ~/.cache/qlm/bench/smollm2-f32.gguf), --threads 2, --qlm BIN,
         --calib-samples 16 --calib-len 512, --autogptq DIR (unpacked auto_gptq wheel),
         --json FILE (per-tensor rows), --gptq-model OUT.gguf (compare: the f32 model with AutoGPTQ's
         dequantized matrices in place of its linears, for `qlm ppl -m OUT.gguf`)
venv: /root/.cache/qlm/venv-ref (torch, hqq, optimum-quanto, bitsandbytes, transformers, gguf).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qlm_gguf import T_F32, QlmFile  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("QLM_SHARED", os.path.join(ROOT, "..", "shared"))
DEFAULT_MODEL = os.path.expanduser("~/.cache/qlm/bench/smollm2-f32.gguf")
DEFAULT_AUTOGPTQ = os.path.expanduser("~/.cache/qlm/dl/auto_gptq-0.7.1")
CALIB_TEXT = os.path.join(SHARED, "data/calibration/llama-factory/c4_demo.jsonl")
# the matrices `qlm quantize` gives the method (quant/quantize.h): the linear layers
LINEAR = re.compile(r"blk\.(\d+)\.(attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_up|ffn_down)\.weight$")
METHODS = ["hqq4", "qint8", "qint4", "qfloat8", "nf4", "nf4dq", "fp4", "fp4dq", "gptq4"]
# the qlm command line of each method (bench/methods-vs-python uses the same)
QLM_ARGS = {
    "hqq4": "--method hqq --bits 4 --group 64",
    "qint8": "--method quanto --opt weights=qint8",
    "qint4": "--method quanto --opt weights=qint4",
    "qfloat8": "--method quanto --opt weights=qfloat8",
    "nf4": "--method nf4", "nf4dq": "--method nf4 --dq",
    "fp4": "--method fp4", "fp4dq": "--method fp4 --dq",
    "gptq4": "--method gptq --bits 4 --group 128 --calib-samples {ns} --calib-len {nl}",
}


def load_matrices(path):
    """[(name, W [rows x cols] float32)] of the linear layers, in file order."""
    f = QlmFile(path)
    out = []
    for name in f.tensors:
        if LINEAR.match(name):
            rows, cols = f.shape(name)
            out.append((name, f.f32(name).reshape(rows, cols)))
    if not out:
        sys.exit(f"{path}: no linear-layer matrices (blk.N.attn_q.weight ...) found")
    return out


def rel_err(w, q):
    return float(np.linalg.norm((w.astype(np.float64) - q.astype(np.float64))) / np.linalg.norm(w.astype(np.float64)))


# ---- the originals: quantize (timed) and decode (not timed) ----

def hqq_quantize(w):
    from hqq.core.quantize import Quantizer
    return Quantizer.quantize(torch.from_numpy(w), nbits=4, channel_wise=True, group_size=64, optimize=True,
                              round_zero=True, axis=1, bitpack=False, device="cpu")


def hqq_decode(w, out):
    from hqq.core.quantize import Quantizer
    W_q, meta = out
    deq = Quantizer.dequantize(W_q, meta).float().numpy().reshape(w.shape)
    return W_q.numpy().reshape(w.shape).astype(np.uint8), deq


def quanto_group(qtype, shape):
    """The group size a real quanto QLinear picks for a weight of this shape (None = per axis)."""
    import optimum.quanto as oq
    rows, cols = shape
    model = torch.nn.Sequential(torch.nn.Linear(cols, rows, bias=False, dtype=torch.float16, device="meta"))
    oq.quantize(model, weights=qtype)
    return model[0].weight_group_size


_GROUPS = {}


def quanto_quantize(w, qname):
    import optimum.quanto as oq
    from optimum.quanto.tensor.optimizers import AbsmaxOptimizer, MaxOptimizer
    from optimum.quanto.tensor.weights import quantize_weight
    qtype = getattr(oq, qname)
    t = torch.from_numpy(w).to(torch.float16)
    if qtype.bits == 8:
        scale = AbsmaxOptimizer()(t, qtype=qtype, axis=0)
        return quantize_weight(t, qtype=qtype, axis=0, scale=scale, optimized=False)
    key = (qname, w.shape)
    if key not in _GROUPS:
        _GROUPS[key] = quanto_group(qtype, w.shape)
    g = _GROUPS[key]
    scale, shift = MaxOptimizer()(t, qtype=qtype, axis=0, group_size=g)
    return quantize_weight(t, qtype=qtype, axis=0, scale=scale, shift=shift, group_size=g, optimized=False)


def quanto_decode(w, q, qname):
    deq = q.dequantize().float().numpy().reshape(w.shape)
    if qname == "qint8":
        codes = (q._data.numpy().astype(np.int16) + 128).astype(np.uint8)  # qlm: u = q + 128
    elif qname == "qfloat8":
        codes = q._data.view(torch.uint8).numpy()
    else:
        codes = q._data.unpack().numpy().astype(np.uint8)
    return codes.reshape(w.shape), deq


def bnb_quantize(w, qtype, dq):
    import bitsandbytes.functional as F
    return F.quantize_4bit(torch.from_numpy(w), blocksize=64, compress_statistics=dq, quant_type=qtype)


def bnb_decode(w, out):
    import bitsandbytes.functional as F
    packed, qs = out
    p = packed.reshape(-1).numpy()
    codes = np.empty(p.size * 2, dtype=np.uint8)
    codes[0::2], codes[1::2] = p >> 4, p & 0xF  # bnb packs (u[2i] << 4) | u[2i+1] over the flat tensor
    deq = F.dequantize_4bit(packed, qs).float().numpy().reshape(w.shape)
    return codes.reshape(w.shape), deq, qs


PY_QUANTIZE = {
    "hqq4": hqq_quantize,
    "qint8": lambda w: quanto_quantize(w, "qint8"), "qint4": lambda w: quanto_quantize(w, "qint4"),
    "qfloat8": lambda w: quanto_quantize(w, "qfloat8"),
    "nf4": lambda w: bnb_quantize(w, "nf4", False), "nf4dq": lambda w: bnb_quantize(w, "nf4", True),
    "fp4": lambda w: bnb_quantize(w, "fp4", False), "fp4dq": lambda w: bnb_quantize(w, "fp4", True),
}


def qlm_deq_bnb(t, qs_tables):
    """qlm's NF4/FP4 weights: absmax (or its double-quantized form) times the code table."""
    table, dmap = qs_tables
    if t["absmax"] is not None:
        absmax = t["absmax"]
    else:
        b = np.arange(t["absmax_q"].size)
        absmax = (dmap[t["absmax_q"]] * t["absmax2"][b // 256] + t["absmax_offset"]).astype(np.float32)
    codes = t["codes"].reshape(-1, 64)
    return (absmax[:, None] * table[codes]).astype(np.float32).reshape(t["codes"].shape), absmax


def compare_simple(method, mats, qf):
    """Rows of the comparison table for the calibration-free methods."""
    import bitsandbytes.functional as F
    rows = []
    for name, w in mats:
        out = PY_QUANTIZE[method](w)
        t = qf.decode(name)
        extra = {}
        if method == "hqq4":
            codes, deq = hqq_decode(w, out)
            extra["scale_maxrel"] = _maxrel(t["scale"].reshape(-1), out[1]["scale"].float().numpy().reshape(-1))
        elif method in ("qint8", "qint4", "qfloat8"):
            codes, deq = quanto_decode(w, out, method)
            s = out._scale.float().numpy().reshape(-1)
            extra["scale_maxrel"] = _maxrel(t["scale"].reshape(-1), s)
        else:
            codes, deq, qs = bnb_decode(w, out)
            table = F.get_4bit_type(method[:3], device="cpu").float().numpy()
            dmap = qs.state2.code.float().numpy() if qs.nested else None
            qdeq, qabs = qlm_deq_bnb(t, (table, dmap))
            t = dict(t, deq=qdeq)
            if qs.nested:
                extra["absmax_q_agree"] = float((t["absmax_q"] == qs.absmax.numpy().reshape(-1)).mean())
                extra["scale_maxrel"] = _maxrel(t["absmax2"], qs.state2.absmax.float().numpy().reshape(-1))
            else:
                extra["scale_maxrel"] = _maxrel(qabs, qs.absmax.float().numpy().reshape(-1))
        agree = float((t["codes"] == codes).mean())
        rows.append(dict(method=method, tensor=name, shape=list(w.shape), agree=agree,
                         err_qlm=rel_err(w, t["deq"]), err_py=rel_err(w, deq), **extra))
    return rows


def _maxrel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("nan")
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-30)))


# ---- GPTQ: AutoGPTQ's GPTQ class, run layer by layer on the HF model ----

def load_autogptq(wheel_dir):
    """auto_gptq/quantization/{quantizer,gptq}.py alone (the package's __init__ needs CUDA extensions)."""
    import importlib.util
    import types
    base = os.path.join(wheel_dir, "auto_gptq", "quantization")
    if not os.path.isfile(os.path.join(base, "gptq.py")):
        sys.exit(f"{base}/gptq.py not found: `pip download --no-deps auto-gptq` and unzip the wheel into {wheel_dir}")
    torch.cuda.synchronize = lambda *a, **k: None  # fasterquant calls it unconditionally
    pkg = types.ModuleType("agq")
    pkg.__path__ = [base]
    sys.modules["agq"] = pkg
    mods = {}
    for name in ("quantizer", "gptq"):
        spec = importlib.util.spec_from_file_location("agq." + name, os.path.join(base, name + ".py"))
        m = importlib.util.module_from_spec(spec)
        sys.modules["agq." + name] = m
        spec.loader.exec_module(m)
        mods[name] = m
    return mods["gptq"].GPTQ


def splitmix64(state):
    state = (state + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return state, z ^ (z >> 31)


def calib_windows(qlm, model, n_samples, seq_len, seed=0):
    """qlm's calibration windows (src/quant/calib.c): the jsonl texts joined by blank lines,
    tokenized without BOS/special parsing, n windows at splitmix64 offsets (SmolLM2 adds no BOS)."""
    texts = []
    with open(CALIB_TEXT, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                texts.append(json.loads(line)["text"])
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt", delete=False) as f:
        f.write("\n\n".join(texts))
        path = f.name
    try:
        out = subprocess.run([qlm, "tokenize", "-m", model, "--no-special", "--ids", "-f", path],
                             check=True, capture_output=True, text=True).stdout
    finally:
        os.unlink(path)
    ids = [int(x) for x in out.split()]
    span = len(ids) - seq_len + 1
    st, wins = seed, []
    for _ in range(n_samples):
        st, r = splitmix64(st)
        start = r % span
        wins.append(ids[start:start + seq_len])
    return torch.tensor(wins, dtype=torch.long)


def load_hf(model_path):
    from transformers import AutoModelForCausalLM
    import transformers
    transformers.logging.set_verbosity_error()
    m = AutoModelForCausalLM.from_pretrained(os.path.dirname(model_path), gguf_file=os.path.basename(model_path),
                                             dtype=torch.float32)
    return m.eval()


HF_NAMES = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
            "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
            "ffn_down": "mlp.down_proj"}


def row_perm(w_gguf, w_hf):
    """p with w_hf = w_gguf[p] (GGUF stores q/k rows permuted for llama.cpp's rope)."""
    key = {w_gguf[i].tobytes(): i for i in range(w_gguf.shape[0])}
    p = np.array([key.get(w_hf[i].tobytes(), -1) for i in range(w_hf.shape[0])])
    if (p < 0).any():
        sys.exit("the HF model's weights are not a row permutation of the GGUF's")
    return p


def qlm_group(group, cols):
    """The group size qlm uses for rows of `cols` weights (src/quant/gptq.c effective_group, the rule
    of quant/rtn.c): `group` if it divides cols, else the largest divisor below it if that is at
    least group / 2, else the smallest divisor above it.  AutoGPTQ is given the same size (it would
    otherwise leave a short last group: 576 = 4 x 128 + 64)."""
    if group <= 0 or group >= cols:
        return cols
    if cols % group == 0:
        return group
    below = next(d for d in range(group, 0, -1) if cols % d == 0)
    if 2 * below >= group:
        return below
    return next(d for d in range(group, cols + 1) if cols % d == 0)


# AutoGPTQ's true-sequential order for LLaMA-like layers (its modeling/llama.py inside_layer_modules):
# each group is quantized before the next group's inputs are collected, so o_proj's Hessian sees
# the quantized q/k/v, gate/up's the quantized o_proj, down's the quantized gate/up.
TRUE_SEQUENTIAL = [["self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj"], ["self_attn.o_proj"],
                   ["mlp.up_proj", "mlp.gate_proj"], ["mlp.down_proj"]]


def gptq_run(model, tokens, GPTQ, bits=4, group=128, collect=None, true_sequential=True):
    """AutoGPTQ's sequential quantization of every decoder layer, in place (the model's weights are
    left quantized): with true_sequential (AutoGPTQ's default) one forward over the windows per
    group of TRUE_SEQUENTIAL, else one forward for all the layer's linears from the float layer;
    collect, if given, gets {"il.hf_name": (Q, scale, zero)}."""
    inner = model.model
    with torch.no_grad():
        hs = inner.embed_tokens(tokens)  # [n x T x d]
        pos = torch.arange(tokens.shape[1]).unsqueeze(0)
        pe = inner.rotary_emb(hs[:1], pos)
        for il, layer in enumerate(inner.layers):
            lins = {k: mod for k, mod in layer.named_modules() if isinstance(mod, torch.nn.Linear)}
            groups = TRUE_SEQUENTIAL if true_sequential else [list(lins)]
            for names in groups:
                gq = {k: GPTQ(lins[k]) for k in names}
                for g in gq.values():
                    g.quantizer.configure(bits, perchannel=True, sym=True, mse=False)
                hooks = [lins[k].register_forward_hook(lambda m, i, o, k=k: gq[k].add_batch(i[0].data, o.data))
                         for k in names]
                for s in range(hs.shape[0]):  # one window per call, as AutoGPTQ feeds its examples
                    layer(hs[s:s + 1], position_embeddings=pe, position_ids=pos)
                for h in hooks:
                    h.remove()
                for k, g in gq.items():
                    gs = qlm_group(group, lins[k].in_features)
                    scale, zero, _ = g.fasterquant(blocksize=128, percdamp=0.01, group_size=gs, actorder=False,
                                                   static_groups=False)
                    if collect is not None:
                        collect[f"{il}.{k}"] = (lins[k].weight.data.numpy().copy(), scale.numpy().copy(),
                                                zero.numpy().copy())
                    g.free()
            hs = _run_layer(layer, hs, pe, pos)  # the next layer's inputs, from the quantized layer


def _run_layer(layer, hs, pe, pos):
    outs = []
    for s in range(hs.shape[0]):
        o = layer(hs[s:s + 1], position_embeddings=pe, position_ids=pos)
        outs.append(o[0] if isinstance(o, tuple) else o)
    return torch.cat(outs)


def hf_linears(model):
    """{"il.hf_name": float32 weight} of the decoder layers' linears, before quantization."""
    return {f"{il}.{k}": mod.weight.data.numpy().copy() for il, layer in enumerate(model.model.layers)
            for k, mod in layer.named_modules() if isinstance(mod, torch.nn.Linear)}


def compare_gptq(args, mats, qf, done=None):
    """done: (orig, collect) of a run already made (the `time` command's), else run it here."""
    if done is None:
        GPTQ = load_autogptq(args.autogptq)
        tokens = calib_windows(args.qlm, args.model, args.calib_samples, args.calib_len)
        model = load_hf(args.model)
        orig = hf_linears(model)
        collect = {}
        t0 = time.perf_counter()
        gptq_run(model, tokens, GPTQ, collect=collect)
        print(f"autogptq pipeline: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    else:
        orig, collect = done
    if args.gptq_save:  # the original's results, for looking at them again without the long run
        np.savez(args.gptq_save, **{k + "/" + n: a for k, v in collect.items() for n, a in zip("QSZ", v)})
    rows, deqs = [], {}
    for name, w in mats:
        m = LINEAR.match(name)
        key = f"{m.group(1)}.{HF_NAMES[m.group(2)]}"
        p = row_perm(w, orig[key])
        Q, scale, zero = collect[key]
        g = w.shape[1] // scale.shape[1]
        step = np.repeat(scale, g, axis=1)
        zz = np.repeat(zero, g, axis=1)
        codes_hf = np.clip(np.round(Q / step) + zz, 0, 15).astype(np.uint8)
        inv = np.argsort(p)
        codes, deq = codes_hf[inv], Q[inv]  # back to the GGUF row order
        deqs[name] = deq
        t = qf.decode(name)
        rows.append(dict(method="gptq4", tensor=name, shape=list(w.shape), agree=float((t["codes"] == codes).mean()),
                         err_qlm=rel_err(w, t["deq"]), err_py=rel_err(w, deq),
                         scale_maxrel=_maxrel(t["scale"], scale[inv])))
    if args.gptq_model:
        write_with_matrices(args.model, args.gptq_model, deqs)
    return rows


def write_with_matrices(src, out, mats):
    """A copy of the f32 GGUF src with the named matrices' data replaced (same shapes, f32, GGUF row
    order), written to a temporary file and renamed."""
    f = QlmFile(src)
    tmp = out + ".tmp"
    with open(src, "rb") as a, open(tmp, "wb") as b:
        b.write(a.read())
    mm = np.memmap(tmp, dtype=np.uint8, mode="r+")
    for name, deq in mats.items():
        ne, t, off = f.tensors[name]
        if t != T_F32 or f.shape(name) != deq.shape:
            sys.exit(f"{src}: {name} is not an f32 matrix of shape {deq.shape}")
        a = f.data_start + off
        mm[a:a + 4 * deq.size] = np.ascontiguousarray(deq, dtype="<f4").view(np.uint8).ravel()
    mm.flush()
    del mm
    os.replace(tmp, out)
    print(f"wrote {out}: {len(mats)} matrices are AutoGPTQ's", file=sys.stderr)


# ---- commands ----

def cmd_compare(args):
    mats = load_matrices(args.model)
    all_rows = []
    for method in args.methods:
        path = os.path.join(args.qlm_dir, method + ".gguf")
        if not os.path.isfile(path):
            sys.exit(f"{path}: missing (run: qlm quantize -m {args.model} -o {path} {QLM_ARGS[method]})")
        qf = QlmFile(path)
        rows = compare_gptq(args, mats, qf) if method == "gptq4" else compare_simple(method, mats, qf)
        all_rows += rows
        print_summary(method, rows)
        sys.stdout.flush()
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(all_rows, f, indent=1)
        os.replace(tmp, args.json)
    bad = [r for r in all_rows if r["method"] != "gptq4" and r["agree"] < 1.0]
    return 1 if bad and args.strict else 0


HEADER_PRINTED = [False]


def print_summary(method, rows):
    if not HEADER_PRINTED[0]:
        print(f"{'method':8} {'tensors':>7} {'codes equal':>12} {'min tensor':>11} {'rel err qlm':>12} "
              f"{'rel err py':>11} {'err diff':>9} {'scale max rel':>13}  worst tensor (lowest agreement)")
        HEADER_PRINTED[0] = True
    n = sum(np.prod(r["shape"]) for r in rows)
    agree = sum(r["agree"] * np.prod(r["shape"]) for r in rows) / n
    worst = min(rows, key=lambda r: (r["agree"], -abs(r["err_qlm"] - r["err_py"])))
    eq = np.mean([r["err_qlm"] for r in rows])
    ep = np.mean([r["err_py"] for r in rows])
    dmax = max(abs(r["err_qlm"] - r["err_py"]) / r["err_py"] for r in rows)
    smax = max(r.get("scale_maxrel", float("nan")) for r in rows)
    print(f"{method:8} {len(rows):7d} {agree * 100:11.4f}% {worst['agree'] * 100:10.4f}% {eq:12.6f} {ep:11.6f} "
          f"{dmax * 100:8.3f}% {smax:13.3g}  {worst['tensor']} ({worst['agree'] * 100:.4f}%, err qlm "
          f"{worst['err_qlm']:.6f} py {worst['err_py']:.6f})")


def cmd_time(args):
    """Best-of-N wall time of the original quantizing the same matrices (weights already in memory)."""
    res = {"method": args.method, "threads": torch.get_num_threads()}
    if args.method == "gptq4":
        GPTQ = load_autogptq(args.autogptq)
        tokens = calib_windows(args.qlm, args.model, args.calib_samples, args.calib_len)
        best, done = None, None
        for _ in range(args.reps):
            t0 = time.perf_counter()
            model = load_hf(args.model)
            orig = hf_linears(model) if args.qlm_file else None
            collect = {} if args.qlm_file else None
            t1 = time.perf_counter()
            gptq_run(model, tokens, GPTQ, collect=collect)
            t2 = time.perf_counter()
            del model
            if best is None or t2 - t1 < best[1]:
                best = (t1 - t0, t2 - t1)
            done = (orig, collect)
        res.update(load_s=best[0], seconds=best[1], calib=f"{args.calib_samples}x{args.calib_len}",
                   what="sequential layer pass + fasterquant (model load not counted)")
        if args.qlm_file:  # the codes of this same run against qlm's file (saves a second long run)
            print(json.dumps(res))
            print_summary("gptq4", compare_gptq(args, load_matrices(args.model), QlmFile(args.qlm_file), done))
            return
    else:
        mats = load_matrices(args.model)
        fn = PY_QUANTIZE[args.method]
        if args.method == "qint4":  # the QLinear group rule is looked up once per shape, outside the timing
            import optimum.quanto as oq
            for _, w in mats:
                _GROUPS.setdefault(("qint4", w.shape), quanto_group(oq.qint4, w.shape))
        fn(mats[0][1])  # warm-up: imports, lazy kernels
        best = None
        for _ in range(args.reps):
            # the results are kept, as a quantizer's caller keeps them (and as qlm keeps its tensors
            # until it writes them): dropping each at once would let the allocator hand the same warm
            # pages to the next call, which qlm's figure does not get
            t0 = time.perf_counter()
            outs = [fn(w) for _, w in mats]
            dt = time.perf_counter() - t0
            del outs
            best = dt if best is None else min(best, dt)
        res.update(seconds=best, matrices=len(mats), weights=int(sum(w.size for _, w in mats)),
                   what="quantize calls only (weights already in memory, results kept)")
    print(json.dumps(res))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("command", choices=["compare", "time"])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--qlm-dir")
    ap.add_argument("--qlm", default=os.environ.get("QLM_BIN", os.path.join(ROOT, "build", "qlm")))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--method", choices=METHODS)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calib-samples", type=int, default=16)
    ap.add_argument("--calib-len", type=int, default=512)
    ap.add_argument("--autogptq", default=DEFAULT_AUTOGPTQ)
    ap.add_argument("--json")
    ap.add_argument("--qlm-file", help="time --method gptq4: also compare the run's codes with this qlm file")
    ap.add_argument("--gptq-save", help="compare: also save AutoGPTQ's Q, scale, zero per matrix (.npz)")
    ap.add_argument("--gptq-model", help="compare: also write a copy of --model (f32 GGUF) whose linear matrices are "
                    "AutoGPTQ's dequantized weights, for `qlm ppl` to score the original's result")
    ap.add_argument("--strict", action="store_true", help="exit 1 if a deterministic method's codes differ")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.methods = [m for m in args.methods.split(",") if m]
    for m in args.methods:
        if m not in METHODS:
            ap.error(f"unknown method {m} (known: {', '.join(METHODS)})")
    if args.command == "compare":
        if not args.qlm_dir:
            ap.error("compare needs --qlm-dir")
        return cmd_compare(args)
    if not args.method:
        ap.error("time needs --method")
    cmd_time(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
