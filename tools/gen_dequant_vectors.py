#!/usr/bin/env python3
"""Generate tests/data/dequant/vectors.bin: random blocks of every qlm storage type and their
dequantized values computed by an independent implementation, gguf-py's numpy dequantizers
(`pip install gguf numpy`; written against gguf 0.19.0).  tests/test_dequant.c checks that
qlm's C dequantizers reproduce them exactly.

gguf-py has no dequantizer for the activation formats Q8_1 and Q8_K, nor for F32/F16 as block
types; for those the value is computed here with numpy from the format definition (w = d * q).

File layout (little-endian):
  "QLMDQV1\\0"  u32 n_entries
  per entry: u32 type (ggml id)  u32 n_blocks  u32 n_bytes  u32 n_values
             n_bytes raw block bytes  n_values float32 expected weights

Usage: python3 tools/gen_dequant_vectors.py [out_path]
"""
import struct
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGML_QUANT_SIZES
from gguf.quants import dequantize

# type -> offsets of the fp16 scale fields inside a block (they must be finite, sane numbers:
# random bits would give NaN/inf, which compare unequal to themselves)
HALF_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0], T.Q8_1: [0, 2],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}
LEGACY_BLOCKS, K_BLOCKS = 4, 2


def quant_size(qtype):
    # gguf-py 0.19.0 still lists Q8_1 as (32, 40): the layout before ggml switched d and s from
    # float to half.  ggml-common.h defines block_q8_1 { half d, s; int8 qs[32]; } and
    # static_asserts its size is 2*sizeof(ggml_half) + 32 = 36, which is what qlm uses.
    if qtype == T.Q8_1:
        return 32, 36
    return GGML_QUANT_SIZES[qtype]


def random_half(rng, i):
    # mostly normal scales of both signs; block 1 gets a subnormal to exercise that path
    if i == 1:
        return np.uint16(rng.integers(1, 0x3FF)).tobytes()
    return np.float16(rng.normal() * 0.05).tobytes()


def make_blocks(rng, qtype, n_blocks):
    block_size, type_size = quant_size(qtype)
    raw = bytearray(rng.integers(0, 256, size=n_blocks * type_size, dtype=np.uint8).tobytes())
    if qtype in (T.F16, T.BF16):
        # avoid NaN/inf patterns (exponent all ones)
        vals = np.frombuffer(bytes(raw), dtype=np.uint16).copy()
        exp_mask = 0x7C00 if qtype == T.F16 else 0x7F80
        vals[(vals & exp_mask) == exp_mask] &= np.uint16(~0x4000 & 0xFFFF)
        raw = bytearray(vals.tobytes())
    elif qtype == T.F32:
        raw = bytearray(rng.normal(size=n_blocks).astype(np.float32).tobytes())
    elif qtype == T.Q8_K:
        for b in range(n_blocks):
            raw[b * type_size:b * type_size + 4] = np.float32(rng.normal() * 0.01).tobytes()
    for b in range(n_blocks):
        for off in HALF_FIELDS.get(qtype, []):
            at = b * type_size + off
            raw[at:at + 2] = random_half(rng, b)
    return bytes(raw), block_size, type_size


def reference(qtype, raw, n_blocks, block_size, type_size):
    data = np.frombuffer(raw, dtype=np.uint8).reshape(n_blocks, type_size)
    if qtype == T.F32:
        return np.frombuffer(raw, dtype=np.float32).copy()
    if qtype == T.F16:
        return np.frombuffer(raw, dtype=np.float16).astype(np.float32)
    if qtype == T.Q8_1:  # d (f16), s (f16), qs[32] int8
        d = data[:, 0:2].copy().view(np.float16).astype(np.float32)
        return (data[:, 4:].view(np.int8).astype(np.float32) * d).reshape(-1)
    if qtype == T.Q8_K:  # d (f32), qs[256] int8, bsums[16] int16
        d = data[:, 0:4].copy().view(np.float32)
        return (d * data[:, 4:260].view(np.int8).astype(np.float32)).reshape(-1)
    return np.asarray(dequantize(data, qtype), dtype=np.float32).reshape(-1)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/data/dequant/vectors.bin"
    rng = np.random.default_rng(20240601)
    types = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q8_1,
             T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.Q8_K]
    entries = []
    for qtype in types:
        block_size = quant_size(qtype)[0]
        n_blocks = K_BLOCKS if block_size == 256 else (LEGACY_BLOCKS if block_size == 32 else 64)
        raw, block_size, type_size = make_blocks(rng, qtype, n_blocks)
        vals = reference(qtype, raw, n_blocks, block_size, type_size)
        assert vals.shape == (n_blocks * block_size,) and np.all(np.isfinite(vals)), qtype
        entries.append(struct.pack("<4I", int(qtype), n_blocks, len(raw), vals.size) + raw +
                       vals.astype("<f4").tobytes())
    with open(out, "wb") as f:
        f.write(b"QLMDQV1\0" + struct.pack("<I", len(entries)) + b"".join(entries))
    print(f"wrote {out}: {len(entries)} types, {sum(map(len, entries)) + 12} bytes")


if __name__ == "__main__":
    main()
