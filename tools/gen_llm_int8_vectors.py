#!/usr/bin/env python3
"""Generate tests/data/llm_int8/vectors.bin: what bitsandbytes' own LLM.int8() CPU ops compute
for a small weight matrix and a batch of activations with planted outlier columns.
tests/test_llm_int8.c checks that qlm (quant/llm_int8.c, kernels/int8row.c, the outlier path of
kernels/matmul.c) reproduces the int8 weights and scales exactly and the products closely.

  python3 -m venv /root/.cache/qlm/venv-ref
  /root/.cache/qlm/venv-ref/bin/pip install bitsandbytes torch numpy   # made with bnb 0.50.2, torch 2.15
  /root/.cache/qlm/venv-ref/bin/python tools/gen_llm_int8_vectors.py

The ops used are the ones Linear8bitLt runs (bnb autograd/_functions.py MatMul8bitLt, inference):
  CB, SCB, _   = torch.ops.bitsandbytes.int8_vectorwise_quant(W)                  (weights)
  CA, SCA, oc  = torch.ops.bitsandbytes.int8_vectorwise_quant(X, threshold)       (activations)
  Y, _         = torch.ops.bitsandbytes.int8_mixed_scaled_mm(X, CA, CB, SCA, SCB, oc)
in float32 (Linear8bitLt runs them on fp16 activations; float32 gives the same formulas without
fp16 rounding of X and Y, which qlm does not do).  On CPU the int32 product is torch._int_mm.

File layout (little-endian):
  "QLMI8V01", int32 rows, cols, T, n_cases
  float32 W[rows*cols], int8 CB[rows*cols], float32 SCB[rows], float32 X[T*cols]
  per case: float32 threshold, int32 n_out, int32 outlier_cols[n_out], float32 SCA[T],
            int8 CA[T*cols], float32 Y[T*rows]
"""
import os
import struct
import sys

import numpy as np
import torch
import bitsandbytes  # noqa: F401  (registers torch.ops.bitsandbytes)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "llm_int8", "vectors.bin")


def main():
    rows, cols, T = 24, 80, 5
    g = torch.Generator().manual_seed(2208)
    W = (torch.randn(rows, cols, generator=g) * 0.05).float()
    X = torch.randn(T, cols, generator=g).clamp(-5.0, 5.0).float()
    X[:, 7] = torch.tensor([20.0, -20.0, 0.5, 19.0, -3.0])  # an outlier column
    X[2, 33] = -9.5  # an outlier in one token only
    X[4, 33] = 5.75  # below the threshold in an outlier column: counts in token 4's absmax
    X[1, 79] = 6.0  # exactly the threshold: an outlier (|x| >= threshold)
    ops = torch.ops.bitsandbytes
    CB, SCB, _ = ops.int8_vectorwise_quant(W.clone())
    out = [b"QLMI8V01", struct.pack("<4i", rows, cols, T, 2), W.numpy().tobytes(), CB.numpy().tobytes(),
           SCB.numpy().astype("<f4").tobytes(), X.numpy().tobytes()]
    for thr in (6.0, 0.0):
        Xc = X.clone()
        CA, SCA, oc = ops.int8_vectorwise_quant(Xc, thr)
        assert torch.equal(Xc, X), "bnb did not restore X"
        Y, _ = ops.int8_mixed_scaled_mm(X, CA, CB, SCA, SCB, oc)
        oc = [] if oc is None else oc.tolist()
        print(f"threshold {thr}: outlier columns {oc}, Y dtype {Y.dtype}", file=sys.stderr)
        out += [struct.pack("<fi", thr, len(oc)), struct.pack(f"<{len(oc)}i", *oc), SCA.numpy().astype("<f4").tobytes(),
                CA.numpy().tobytes(), Y.float().numpy().astype("<f4").tobytes()]
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "wb") as f:
        f.write(b"".join(out))
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
