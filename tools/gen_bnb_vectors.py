#!/usr/bin/env python3
"""Generate tests/data/bnb4/*.bin: bitsandbytes NF4/FP4 reference vectors for tests/test_bnb4.c.

Computed with the real bitsandbytes package (written against bitsandbytes 0.50.2, torch CPU):
  * functional.quantize_4bit / dequantize_4bit (blocksize 64), with and without
    compress_statistics (double quantization).  On CPU bnb runs its default torch backend for
    quantize_4bit (bucketize on midpoints), which is the reference qlm matches exactly.
  * The tables: get_4bit_type("nf4"/"fp4"), create_dynamic_map(signed=True).
The double-quantized absmax codes come in two versions:
  * "native": what bnb 0.50.2 really returns on CPU: quantize_blockwise goes to its native
    library (cquantize_blockwise_cpu_fp32), whose approximate binary search sometimes picks a
    code that is not the nearest;
  * "default": bnb's default-backend quantize_blockwise (backends/default/ops.py), re-run here
    line for line with torch (that function is registered under the name `_` and cannot be
    imported): absmax per 256, s = clamp(v * (1/absmax), -1, 1), bucketize on the midpoints of
    the dynamic map.  qlm matches this one exactly; the test checks that qlm's reconstruction
    is never worse than the native codes'.

File layout (little-endian), tables.bin:
  "QLMBNBT1"  f32 nf4[16]  f32 fp4[16]  f32 dynamic_map[256]
Case files (<name>.bin):
  "QLMBNB41"  u32 rows  u32 cols  u32 has_deq    (N = rows*cols, nb = N/64, n2 = ceil(nb/256))
  f32 x[N]
  then for quant_type in (nf4, fp4):
    u8  packed[N/2]        bnb's packing: (u[2i] << 4) | u[2i+1], flattened row-major
    f32 absmax[nb]
    f32 deq[N]             dequantize_4bit (only if has_deq)
    f32 offset             nested_offset (mean of absmax, torch float)
    u8  absmax_q_native[nb]
    u8  absmax_q_default[nb]
    f32 absmax2[nb2]       nested absmax (identical for both versions: max |absmax - offset|)
    f32 absmax_dq[nb]      bnb's dequantize_blockwise(native codes) + offset
    f32 deq_dq[N]          dequantize_4bit with the double-quantized state (only if has_deq)

Usage: /root/.cache/qlm/venv-ref/bin/python tools/gen_bnb_vectors.py [out_dir]
"""
import os
import struct
import sys

import numpy as np
import torch
import bitsandbytes as bnb
import bitsandbytes.functional as F


def default_quantize_blockwise(A, code, blocksize):
    # backends/default/ops.py, quantize_blockwise (bitsandbytes 0.50.2)
    A_flat = A.reshape(-1).float()
    n = A_flat.numel()
    rem = n % blocksize
    full = n - rem
    blocks = full // blocksize
    A_com = A_flat[:full].reshape(blocks, blocksize)
    absmax = A_com.abs().max(dim=-1)[0]
    scaled = torch.clamp(A_com * (1.0 / absmax.clamp(min=1e-38).view(-1, 1)), -1, 1).reshape(-1)
    if rem:
        am = A_flat[full:].abs().max().clamp(min=1e-38)
        absmax = torch.cat([absmax, am.unsqueeze(0)])
        scaled = torch.cat([scaled, torch.clamp(A_flat[full:] / am, -1, 1)])
    bounds = (code[:-1] + code[1:]) / 2
    q = torch.bucketize(scaled, bounds, out_int32=True).to(torch.uint8)
    return q.reshape(A.shape), absmax


def f32(a):
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32)).tobytes()


def u8(a):
    return np.ascontiguousarray(np.asarray(a, dtype=np.uint8)).tobytes()


def case(x, has_deq):
    rows, cols = x.shape
    out = [b"QLMBNB41", struct.pack("<III", rows, cols, int(has_deq)), f32(x)]
    t = torch.from_numpy(x.copy())
    for qt in ("nf4", "fp4"):
        packed, st = F.quantize_4bit(t, blocksize=64, quant_type=qt)
        out += [u8(packed.flatten().numpy()), f32(st.absmax.numpy())]
        if has_deq:
            out.append(f32(F.dequantize_4bit(packed, st).numpy()))
        packed2, st2 = F.quantize_4bit(t, blocksize=64, quant_type=qt, compress_statistics=True)
        assert torch.equal(packed2, packed), "codes must not depend on double quantization"
        code8 = st2.state2.code
        qdef, am2_def = default_quantize_blockwise(st.absmax - st2.offset, code8, 256)
        assert torch.equal(am2_def, st2.state2.absmax)
        absmax_dq = F.dequantize_blockwise(st2.absmax, st2.state2) + st2.offset
        out += [f32([st2.offset.item()]), u8(st2.absmax.numpy()), u8(qdef.numpy()), f32(st2.state2.absmax.numpy()),
                f32(absmax_dq.numpy())]
        if has_deq:
            out.append(f32(F.dequantize_4bit(packed2, st2).numpy()))
    return b"".join(out)


def edge_cases():
    """2 x 512: one block per kind of corner."""
    nf4 = F.get_4bit_type("nf4", device="cpu")
    fp4 = F.get_4bit_type("fp4", device="cpu")
    x = np.zeros((2, 512), np.float32)
    b = x.reshape(-1, 64)  # 16 blocks (view)
    rng = np.random.default_rng(7)
    # block 0: all zero
    # block 1: the NF4 midpoints exactly (absmax 1 thanks to the +-1 entries)
    m = ((nf4[:-1] + nf4[1:]) / 2).numpy()
    b[1, :15] = m
    b[1, 15:30] = -m
    b[1, 30], b[1, 31] = 1.0, -1.0
    # block 2: the FP4 midpoints (sorted table)
    s = torch.sort(fp4).values
    mf = ((s[:-1] + s[1:]) / 2).numpy()
    b[2, :15] = mf
    b[2, 15] = 1.0
    b[2, 16:31] = -mf
    # block 3: the code values themselves, scaled by 3.7
    b[3, :16] = nf4.numpy() * np.float32(3.7)
    b[3, 16:32] = fp4.numpy() * np.float32(3.7)
    # block 4: one-hot; block 5: all negative; block 6: tiny (subnormal absmax); block 7: huge
    b[4, 17] = -2.5
    b[5] = -np.abs(rng.standard_normal(64)).astype(np.float32)
    b[6] = (rng.standard_normal(64) * 1e-40).astype(np.float32)
    b[7] = (rng.standard_normal(64) * 1e30).astype(np.float32)
    # block 8: constant; blocks 9..15 gaussian with growing scales
    b[8] = 0.25
    for k in range(9, 16):
        b[k] = (rng.standard_normal(64) * 10.0 ** (k - 12)).astype(np.float32)
    return x


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "data",
                                                                  "bnb4")
    os.makedirs(out_dir, exist_ok=True)
    tables = [b"QLMBNBT1", f32(F.get_4bit_type("nf4", device="cpu").numpy()),
              f32(F.get_4bit_type("fp4", device="cpu").numpy()), f32(F.create_dynamic_map(signed=True).numpy())]
    cases = {}
    rng = np.random.default_rng(20240531)
    cases["gauss"] = (rng.standard_normal((4, 128)).astype(np.float32) * 0.02, True)
    cases["heavy"] = (rng.standard_t(2.0, (8, 256)).astype(np.float32) * 0.05, True)
    cases["edge"] = (edge_cases(), True)
    # 288 blocks: two absmax2 groups, the second partial; absmax spread over decades
    big = rng.standard_normal((16, 1152)).astype(np.float32)
    big *= (10.0 ** rng.uniform(-3, 0, (16, 18, 1))).astype(np.float32).repeat(64, axis=2).reshape(16, 1152)
    cases["dq_groups"] = (big, False)
    with open(os.path.join(out_dir, "tables.bin"), "wb") as f:
        f.write(b"".join(tables))
    for name, (x, has_deq) in cases.items():
        with open(os.path.join(out_dir, name + ".bin"), "wb") as f:
            f.write(case(x, has_deq))
    print("bitsandbytes", bnb.__version__, "torch", torch.__version__, "->", out_dir)


if __name__ == "__main__":
    main()
