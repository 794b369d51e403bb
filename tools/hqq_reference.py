#!/usr/bin/env python3
"""hqq_reference.py — run the real `hqq` package (mobiusml, on the CPU in float32) on fixed seeded
weights and write tests/data/hqq/hqq_ref.bin, which tests/test_hqq.c compares with qlm's HQQ.

Setup (once):  python -m venv ~/.cache/qlm/venv-ref && ~/.cache/qlm/venv-ref/bin/pip install \
                   torch numpy hqq termcolor      (hqq is used with --no-deps if its CUDA extras fail)
Run:           ~/.cache/qlm/venv-ref/bin/python tools/hqq_reference.py [out_path]

What is recorded per case is the output of hqq.core.quantize.Quantizer.quantize(W, nbits, group_size=64,
axis=1, round_zero=(nbits == 4) as BaseQuantizeConfig sets it, optimize=True, bitpack=False,
device="cpu"): the codes W_q, the stored scale (1 / inverse scale) and zero, as float32, plus the
mean |W - W_r| of every solver iteration (recorded by wrapping hqq's own step function).

File layout (little-endian):
  char magic[8] = "QLMHQQ01"; u32 n_mats
  per matrix: u32 rows, cols; f32 W[rows * cols]   (row-major, rows = output features)
  u32 n_cases
  per case:   u32 mat, bits, group, round_zero, n_iter; f32 errs[n_iter];
              f32 scale[ng]; f32 zero[ng]; u8 W_q[rows * cols]       (ng = rows * cols / group)
"""
import io
import os
import struct
import sys

import numpy as np
import torch

import hqq
import hqq.core.optimize as hopt
from hqq.core.quantize import Quantizer


def matrices():
    rng = np.random.RandomState(20240604)
    # A: LLM-like: N(0, 0.02^2) with 1% outliers 10x larger (solver errors stay far below the
    #    shrink threshold, so W_e = 0: the zero update is a plain least-squares mean)
    a = rng.normal(0.0, 0.02, size=(32, 192)).astype(np.float32)
    mask = rng.uniform(size=a.shape) < 0.01
    a[mask] *= 10.0
    # B: heavy-tailed at unit scale, Student t with 2.5 degrees of freedom (the lp shrink is active)
    b = rng.standard_t(2.5, size=(32, 192)).astype(np.float32)
    return [a, b]


def run_case(w, bits, group):
    errs = []
    step = hopt.optimize_weights_proximal_legacy_step

    def recording_step(W_f, scale, zero, min_max, beta, lp_norm, axis):
        out = step(W_f, scale, zero, min_max, beta, lp_norm, axis)
        errs.append(float(torch.abs(W_f - out[0]).mean().float()))
        return out

    hopt.optimize_weights_proximal_legacy_step = recording_step
    try:
        W_q, meta = Quantizer.quantize(torch.from_numpy(w), nbits=bits, channel_wise=True, group_size=group,
                                       optimize=True, round_zero=(bits == 4), axis=1, bitpack=False,
                                       device="cpu")
    finally:
        hopt.optimize_weights_proximal_legacy_step = step
    scale = meta["scale"].float().numpy().reshape(-1).astype(np.float32)
    zero = meta["zero"].float().numpy().reshape(-1).astype(np.float32)
    codes = W_q.numpy().reshape(-1)
    assert np.all(codes == np.round(codes)) and codes.min() >= 0 and codes.max() <= 2**bits - 1
    return errs, scale, zero, codes.astype(np.uint8)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "data",
                                                             "hqq", "hqq_ref.bin")
    assert hopt.optimize_weights_proximal is hopt.optimize_weights_proximal_legacy, "hqq's default solver changed"
    torch.manual_seed(0)
    mats = matrices()
    cases = [(0, 4), (0, 2), (0, 8), (1, 4), (1, 2), (1, 3)]
    buf = io.BytesIO()
    buf.write(b"QLMHQQ01")
    buf.write(struct.pack("<I", len(mats)))
    for m in mats:
        buf.write(struct.pack("<II", *m.shape))
        buf.write(m.astype("<f4").tobytes())
    buf.write(struct.pack("<I", len(cases)))
    for mi, bits in cases:
        errs, scale, zero, codes = run_case(mats[mi], bits, 64)
        buf.write(struct.pack("<IIIII", mi, bits, 64, int(bits == 4), len(errs)))
        buf.write(np.asarray(errs, dtype="<f4").tobytes())
        buf.write(scale.astype("<f4").tobytes())
        buf.write(zero.astype("<f4").tobytes())
        buf.write(codes.tobytes())
        print(f"matrix {mi} bits {bits}: {len(errs)} iterations, errors {['%.6g' % e for e in errs]}")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "wb") as f:
        f.write(buf.getvalue())
    print(f"hqq {getattr(hqq, '__version__', '?')}, torch {torch.__version__}: wrote {out} ({buf.tell()} bytes)")


if __name__ == "__main__":
    main()
