#!/usr/bin/env python3
"""quanto_reference.py — run the real optimum-quanto package (on the CPU) on fixed seeded weights and
write tests/data/quanto/quanto_ref.bin, which tests/test_quanto.c compares with qlm's quanto method.

Setup (once):  python -m venv ~/.cache/qlm/venv-ref && ~/.cache/qlm/venv-ref/bin/pip install torch numpy
               ~/.cache/qlm/venv-ref/bin/pip install --no-deps optimum-quanto     (0.2.7 was used)
Run:           ~/.cache/qlm/venv-ref/bin/python tools/quanto_reference.py [out_path [act_out_path]]
               (activation_case() below also needs transformers, for a tiny LlamaForCausalLM)

Each case does what QModuleMixin.qweight does for a torch.nn.Linear weight of the given dtype:
the default optimizer (AbsmaxOptimizer for 8-bit qtypes, MaxOptimizer otherwise) along axis 0 with
the group size a real quanto QLinear picks for that shape (recorded, so the test checks qlm's rule),
then quantize_weight(..., optimized=False) — the kernel-agnostic tensors (the "optimized" subclasses
only re-layout the same codes for a device kernel).  The `zeropoint` case calls MaxOptimizer with
zeropoint=True.  The float8 cast case records torch's float32 -> float8_e4m3fn conversion of
boundary values (no clamp), which qlm's converter must equal.

File layout (little-endian):
  char magic[8] = "QLMQNT01"; u32 rows, cols; f32 W[rows * cols]   (row-major, rows = out features)
  u32 n_cases
  per case: char name[16] (NUL padded): "qint8", "qint4", "qint2", "qfloat8"
            u32 dtype (0 = float32, 1 = float16, 2 = bfloat16), u32 zeropoint (0/1),
            u32 group (0 = per axis), u32 n_scale;
            u8 codes[rows * cols]   (row-major: int8 for qint8, uint8 for qint4/qint2, the e4m3fn byte)
            f32 scale[n_scale]; f32 shift[n_scale] (qint4/qint2 only; the uint8 zero-point as f32 when
            zeropoint); u32 n_deq; f32 deq[n_deq]: quanto's dequantize() as float32 (qint4/qint2 cases:
            rows * cols values; 0 for the others, whose dequantization is scale * code)
  u32 n_cast; f32 x[n_cast]; u8 e4m3fn(x)[n_cast]
"""
import struct
import sys

import numpy as np
import torch

import optimum.quanto as oq
from optimum.quanto import qfloat8, qint2, qint4, qint8
from optimum.quanto.tensor.optimizers import AbsmaxOptimizer, MaxOptimizer
from optimum.quanto.tensor.weights import quantize_weight

ROWS, COLS = 16, 256
DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


def weights():
    rng = np.random.RandomState(20240611)
    w = rng.normal(0.0, 0.02, size=(ROWS, COLS)).astype(np.float32)
    w *= rng.uniform(0.25, 4.0, size=(ROWS, 1)).astype(np.float32)  # rows of different scales
    mask = rng.uniform(size=w.shape) < 0.01
    w[mask] *= 12.0  # outliers
    w[3, :] = np.abs(w[3, :])  # an all-positive row (shift below 0)
    w[5, 128:] -= 0.05  # a group away from 0
    w[7, 10:20] = 0.0
    return w


def group_size_of(qtype, dtype):
    """The group size a real quanto QLinear picks for this weight shape (None = per axis)."""
    model = torch.nn.Sequential(torch.nn.Linear(COLS, ROWS, bias=False, dtype=dtype))
    oq.quantize(model, weights=qtype)
    return model[0].weight_group_size


def case(w, qtype, dtype, zeropoint=False):
    t = torch.from_numpy(w).to(dtype)
    if qtype.bits == 8:
        scale = AbsmaxOptimizer()(t, qtype=qtype, axis=0)
        q = quantize_weight(t, qtype=qtype, axis=0, scale=scale, optimized=False)
        codes = q._data.view(torch.uint8).reshape(-1).numpy()
        shift, group = None, None
    else:
        group = group_size_of(qtype, dtype)
        scale, shift = MaxOptimizer()(t, qtype=qtype, axis=0, group_size=group, zeropoint=zeropoint)
        q = quantize_weight(t, qtype=qtype, axis=0, scale=scale, shift=shift, group_size=group, optimized=False)
        codes = q._data.unpack().reshape(-1).numpy().astype(np.uint8)
    deq = q.dequantize().float().reshape(-1).numpy()
    rec = bytearray()
    rec += qtype.name.encode().ljust(16, b"\0")
    ns = scale.numel()
    rec += struct.pack("<IIII", DTYPES[dtype], int(zeropoint), group or 0, ns)
    assert codes.size == ROWS * COLS
    rec += codes.tobytes()
    rec += scale.float().reshape(-1).numpy().astype("<f4").tobytes()
    if shift is not None:
        rec += shift.float().reshape(-1).numpy().astype("<f4").tobytes()
    deq = deq if shift is not None else deq[:0]  # kept for the affine cases only (file size)
    rec += struct.pack("<I", deq.size) + deq.astype("<f4").tobytes()
    return bytes(rec)


def cast_values():
    rng = np.random.RandomState(5)
    v = [0.0, -0.0, 2.0**-10, 2.0**-10 * 1.0001, 2.0**-9 * 1.5, 2.0**-9 * 2.5, 2.0**-6, 2.0**-6 * 0.97,
         1e-30, 447.0, 448.0, 449.0, 463.9, 464.0, 464.1, 479.9, 480.0, 1e9, float("inf"), float("-inf"),
         float("nan"), 1.0625, 1.1875, 17.0, 18.0, 19.0, 240.0, 248.0, 256.0]
    v += [-x for x in v[2:20]]
    # every code's midpoints and values, and random magnitudes over the whole range
    codes = torch.arange(0, 127, dtype=torch.uint8).view(torch.float8_e4m3fn).float().numpy()
    for a, b in zip(codes[:-1], codes[1:]):
        v += [a, (a + b) / 2, np.nextafter(np.float32((a + b) / 2), np.float32(0)),
              np.nextafter(np.float32((a + b) / 2), np.float32(1e9))]
    v += list(np.exp(rng.uniform(np.log(1e-4), np.log(600.0), size=600)) * rng.choice([-1.0, 1.0], size=600))
    x = torch.tensor(np.array(v, dtype=np.float32))
    y = x.to(torch.float8_e4m3fn).view(torch.uint8)
    return struct.pack("<I", x.numel()) + x.numpy().astype("<f4").tobytes() + y.numpy().tobytes()


ACT_IN, ACT_OUT, ACT_T, ACT_CALLS = 64, 8, 6, 7


def activation_case():
    """activations=qint8: a real QLinear (f16, weights=qint8, activations=qint8) calibrated with
    Calibration() on ACT_CALLS batches of ACT_T x ACT_IN inputs of varying ranges; records each
    call's input, the input_scale after each call, then the frozen module's output on a test input
    and the int8 codes quanto gives that input.  Also checks on a tiny LlamaForCausalLM that
    Calibration's streamline mode leaves no output quantizer on any linear (outputs stay float).

    File tests/data/quanto/quanto_act_ref.bin (little-endian):
      char magic[8] = "QLMQACT1"; u32 in, out, T, n_calls; f32 W[out * in] (f16 values)
      per call: f32 X[T * in] (f16 values); f32 input_scale after the call
      f32 Xt[T * in]; i8 codes[T * in] (quantize_symmetric(Xt, qint8, scale)); f32 Y[T * out]
      u32 llama_linears, llama_output_quantized"""
    rng = np.random.RandomState(77)
    lin = torch.nn.Linear(ACT_IN, ACT_OUT, bias=False, dtype=torch.float16)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(rng.normal(0, 0.05, size=(ACT_OUT, ACT_IN)).astype(np.float32)).half())
    model = torch.nn.Sequential(lin)
    oq.quantize(model, weights=qint8, activations=qint8)
    w = model[0].weight.detach().float().numpy().copy()
    rec = bytearray(b"QLMQACT1" + struct.pack("<IIII", ACT_IN, ACT_OUT, ACT_T, ACT_CALLS) + w.astype("<f4").tobytes())
    ranges = [0.5, 3.0, 1.0, 0.25, 8.0, 2.0, 1.5]
    with torch.no_grad(), oq.Calibration():
        for k in range(ACT_CALLS):
            x = torch.from_numpy(rng.normal(0, ranges[k], size=(ACT_T, ACT_IN)).astype(np.float32)).half()
            model(x)
            rec += x.float().numpy().astype("<f4").tobytes()
            rec += struct.pack("<f", float(model[0].input_scale))
    oq.freeze(model)
    xt = torch.from_numpy(rng.normal(0, 1.2, size=(ACT_T, ACT_IN)).astype(np.float32)).half()
    scale = model[0].input_scale
    codes = torch.ops.quanto.quantize_symmetric(xt, dtype=torch.int8, axis=None, scale=scale)
    with torch.no_grad():
        y = model(xt)
    y = y.dequantize() if hasattr(y, "dequantize") else y
    rec += xt.float().numpy().astype("<f4").tobytes() + codes.numpy().astype(np.int8).tobytes()
    rec += y.float().numpy().astype("<f4").tobytes()
    rec += struct.pack("<II", *llama_output_quantizers())
    return bytes(rec)


def llama_output_quantizers():
    """(linears, linears that still quantize their outputs) after Calibration() on a tiny LLaMA."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    m = LlamaForCausalLM(cfg)
    oq.quantize(m, weights=qint8, activations=qint8, exclude=["lm_head"])
    with torch.no_grad(), oq.Calibration():
        for _ in range(2):
            m(torch.randint(0, 64, (1, 16)))
    mods = [mod for mod in m.modules() if isinstance(mod, oq.QModuleMixin)]
    return len(mods), sum(1 for mod in mods if len(mod._forward_hooks) > 0)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/data/quanto/quanto_ref.bin"
    act_out = sys.argv[2] if len(sys.argv) > 2 else "tests/data/quanto/quanto_act_ref.bin"
    with open(act_out, "wb") as f:
        f.write(activation_case())
    print(f"wrote {act_out}")
    w = weights()
    cases = [
        case(w, qint8, torch.float16), case(w, qint8, torch.bfloat16),
        case(w, qint4, torch.float16), case(w, qint4, torch.bfloat16),
        case(w, qint2, torch.float16), case(w, qint4, torch.float16, zeropoint=True),
        case(w, qfloat8, torch.float32), case(w, qfloat8, torch.float16), case(w, qfloat8, torch.bfloat16),
    ]
    with open(out, "wb") as f:
        f.write(b"QLMQNT01" + struct.pack("<II", ROWS, COLS) + w.astype("<f4").tobytes())
        f.write(struct.pack("<I", len(cases)))
        for c in cases:
            f.write(c)
        f.write(cast_values())
    print(f"wrote {out}: {len(cases)} cases, torch {torch.__version__}")


if __name__ == "__main__":
    main()
