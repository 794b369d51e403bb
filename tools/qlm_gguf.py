#!/usr/bin/env python3
"""qlm_gguf.py — read the model files `qlm quantize` writes (GGUF v3 with qlm's own tensor type ids)
into numpy: the raw codes and scales of each quantized tensor, and its dequantized weights.

The `gguf` package's reader refuses type ids it does not know (qlm's start at 1000), so this is a
small independent GGUF parser written from the GGUF spec (ggml docs/gguf.md) and the layouts
documented in src/kernels/{types,rtn,hqq,bnb4,fp8}.h.  Used by tools/methods_reference.py.

    from qlm_gguf import QlmFile
    f = QlmFile("out.gguf")
    t = f.decode("blk.0.attn_q.weight")   # dict: kind, codes [rows x cols], scale..., deq [rows x cols]
"""
import struct

import numpy as np

# GGUF metadata value types (gguf.md)
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9

# kernels/types.h: parameterized ids = family << 24 | bits << 16 | block
FAM_RTN_SYM, FAM_RTN_ASYM, FAM_INT8_ROW, FAM_Q8_ROW, FAM_HQQ, FAM_FP8 = 1, 2, 3, 4, 5, 6
T_F32, T_F16, T_I8 = 0, 1, 24
T_NF4, T_FP4, T_NF4_DQ, T_FP4_DQ = 1000, 1001, 1002, 1003


class GgufError(Exception):
    pass


class _Cursor:
    def __init__(self, buf, path):
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, fmt):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise GgufError(f"{self.path}: truncated at byte {self.pos} (reading {fmt})")
        v = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return v[0] if len(v) == 1 else v

    def string(self):
        n = self.take("<Q")
        if self.pos + n > len(self.buf):
            raise GgufError(f"{self.path}: string of {n} bytes runs past the end at byte {self.pos}")
        s = bytes(self.buf[self.pos:self.pos + n]).decode("utf-8")
        self.pos += n
        return s

    def value(self, vt):
        if vt in _SCALARS:
            return self.take(_SCALARS[vt])
        if vt == _STRING:
            return self.string()
        if vt == _ARRAY:
            et, n = self.take("<I"), self.take("<Q")
            return [self.value(et) for _ in range(n)]
        raise GgufError(f"{self.path}: unknown metadata value type {vt} at byte {self.pos}")


class QlmFile:
    """Tensor directory and metadata of a GGUF file; tensor bytes are memory-mapped."""

    def __init__(self, path):
        self.path = path
        self.mm = np.memmap(path, dtype=np.uint8, mode="r")
        c = _Cursor(self.mm, path)
        if bytes(self.mm[:4]) != b"GGUF":
            raise GgufError(f"{path}: not a GGUF file (bad magic)")
        c.pos = 4
        version = c.take("<I")
        if version not in (2, 3):
            raise GgufError(f"{path}: GGUF version {version} (expected 2 or 3)")
        n_tensors, n_kv = c.take("<Q"), c.take("<Q")
        self.meta = {}
        for _ in range(n_kv):
            key = c.string()
            self.meta[key] = c.value(c.take("<I"))
        self.tensors = {}
        for _ in range(n_tensors):
            name = c.string()
            nd = c.take("<I")
            ne = [c.take("<Q") for _ in range(nd)]
            ttype, off = c.take("<I"), c.take("<Q")
            self.tensors[name] = (ne, ttype, off)
        align = int(self.meta.get("general.alignment", 32))
        self.data_start = (c.pos + align - 1) // align * align

    def shape(self, name):
        """(rows, cols) of a matrix: GGUF ne[0] is the row length."""
        ne = self.tensors[name][0]
        return (int(ne[1]) if len(ne) > 1 else 1), int(ne[0])

    def raw(self, name, nbytes):
        ne, _, off = self.tensors[name]
        a = self.data_start + off
        if a + nbytes > len(self.mm):
            raise GgufError(f"{self.path}: tensor {name} ({nbytes} bytes at {a}) runs past the end of the file")
        return np.asarray(self.mm[a:a + nbytes])

    def f32(self, name):
        ne, t, _ = self.tensors[name]
        n = int(np.prod(ne))
        if t == T_F32:
            return self.raw(name, 4 * n).view("<f4").copy()
        if t == T_F16:
            return self.raw(name, 2 * n).view("<f2").astype(np.float32)
        if t == T_I8:
            return self.raw(name, n).view(np.int8).astype(np.float32)
        raise GgufError(f"{self.path}: tensor {name} has type {t}, not f32/f16/i8")

    def decode(self, name):
        """Codes, scales and dequantized weights of one quantized matrix (see the kernels/*.h layouts)."""
        ne, t, _ = self.tensors[name]
        rows, cols = self.shape(name)
        fam, bits, block = t >> 24, (t >> 16) & 0xFF, t & 0xFFFF
        if fam in (FAM_RTN_SYM, FAM_RTN_ASYM, FAM_HQQ):
            return self._decode_grouped(name, t, fam, bits, block, rows, cols)
        if fam == FAM_FP8:
            return self._decode_fp8(name, block, rows, cols)
        if t in (T_NF4, T_FP4, T_NF4_DQ, T_FP4_DQ):
            return self._decode_bnb4(name, t, rows, cols)
        if t == T_F32:
            w = self.f32(name).reshape(rows, cols)
            return {"kind": "f32", "codes": None, "deq": w}
        raise GgufError(f"{self.path}: tensor {name}: type id {t} is not one this reader decodes")

    def _decode_grouped(self, name, t, fam, bits, g, rows, cols):
        if cols % g:
            raise GgufError(f"{self.path}: tensor {name}: row length {cols} is not a multiple of group {g}")
        hdr = 2 if fam == FAM_RTN_SYM else 4
        pb = (g * bits + 7) // 8
        nblk = rows * cols // g
        blk = self.raw(name, nblk * (hdr + pb)).reshape(nblk, hdr + pb)
        scale = blk[:, 0:2].copy().view("<f2").astype(np.float32).reshape(-1)
        codes = _unpack(blk[:, hdr:], bits, g)  # [nblk x g]
        if fam == FAM_RTN_SYM:
            zero = np.full(nblk, 2 ** (bits - 1), dtype=np.float32)
        elif fam == FAM_RTN_ASYM:
            zero = blk[:, 2:4].copy().view("<i2").astype(np.float32).reshape(-1)
        else:
            zero = blk[:, 2:4].copy().view("<f2").astype(np.float32).reshape(-1)
        # rtn: d * (u - z); hqq: (u - z) * s in float, the same product
        deq = ((codes.astype(np.float32) - zero[:, None]) * scale[:, None]).astype(np.float32)
        kind = {FAM_RTN_SYM: "rtn-sym", FAM_RTN_ASYM: "rtn-asym", FAM_HQQ: "hqq"}[fam]
        return {"kind": kind, "bits": bits, "group": g, "codes": codes.reshape(rows, cols),
                "scale": scale.reshape(rows, cols // g), "zero": zero.reshape(rows, cols // g),
                "deq": deq.reshape(rows, cols)}

    def _decode_fp8(self, name, g, rows, cols):
        if g != cols:
            raise GgufError(f"{self.path}: tensor {name}: fp8 block {g} is not the row length {cols}")
        blk = self.raw(name, rows * (4 + g)).reshape(rows, 4 + g)
        scale = blk[:, :4].copy().view("<f4").reshape(-1)
        codes = blk[:, 4:].copy()
        deq = (scale[:, None] * e4m3fn_to_f32(codes)).astype(np.float32)
        return {"kind": "fp8", "codes": codes, "scale": scale, "deq": deq}

    def _decode_bnb4(self, name, t, rows, cols):
        nblk = rows * cols // 64
        dq = t in (T_NF4_DQ, T_FP4_DQ)
        if dq:
            body = self.raw(name, nblk * 32).reshape(nblk, 32)
            absmax = None
        else:
            blk = self.raw(name, nblk * 36).reshape(nblk, 36)
            absmax = blk[:, :4].copy().view("<f4").reshape(-1)
            body = blk[:, 4:]
        codes = np.concatenate([body & 0xF, body >> 4], axis=1)  # byte j: u_j low, u_{j+32} high
        out = {"kind": "nf4" if t in (T_NF4, T_NF4_DQ) else "fp4", "codes": codes.reshape(rows, cols),
               "absmax": absmax}
        if dq:
            out["absmax_q"] = self.raw(name + ".absmax_q", nblk).copy()
            out["absmax2"] = self.f32(name + ".absmax2")
            out["absmax_offset"] = float(self.f32(name + ".absmax_offset")[0])
        return out


def _unpack(p, bits, g):
    """Codes [nblk x g] from code bytes [nblk x P] in the rtn.h/hqq.h layouts."""
    if bits == 8:
        return p[:, :g].copy()
    if bits == 4 and g % 32 == 0:
        q = p.reshape(p.shape[0], g // 32, 16)
        return np.concatenate([q & 0xF, q >> 4], axis=2).reshape(p.shape[0], g)
    # little-endian bit stream: u_i in bits [i*b, i*b + b)
    bitsarr = np.unpackbits(p, axis=1, bitorder="little")[:, :g * bits].reshape(p.shape[0], g, bits)
    return (bitsarr.astype(np.uint16) << np.arange(bits, dtype=np.uint16)).sum(axis=2).astype(np.uint8)


def e4m3fn_to_f32(c):
    """float8 e4m3fn bytes -> float32 (exact; 0x7F/0xFF are NaN)."""
    c = np.asarray(c, dtype=np.uint8)
    sign = np.where(c & 0x80, -1.0, 1.0)
    e = (c >> 3) & 0xF
    m = (c & 7).astype(np.float64)
    v = np.where(e == 0, m * 2.0**-9, (1.0 + m / 8.0) * np.exp2(e.astype(np.float64) - 7.0))
    v = np.where((c & 0x7F) == 0x7F, np.nan, v)
    return (sign * v).astype(np.float32)
