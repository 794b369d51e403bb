#!/usr/bin/env python3
"""Generate tests/data/quants/vectors.bin: float inputs and the bytes llama.cpp's reference
quantizers (quantize_row_<type>_ref in ggml/src/ggml-quants.c) produce for them.
tests/test_quants.c checks that qlm's quantizers (src/kernels/quants.c) reproduce them exactly.

The expected bytes come from llama.cpp's own C code, compiled here from a source checkout that
is NOT part of qlm and must not be committed.  How the vectors in the repository were made:

  mkdir -p /root/.cache/qlm/llama-cpp-src && cd /root/.cache/qlm/llama-cpp-src
  pip download llama-cpp-python==0.3.36 --no-deps --no-binary :all: -d .   # vendors llama.cpp
  tar xzf llama_cpp_python-0.3.36.tar.gz
  python3 tools/gen_quant_vectors.py \\
      --ggml /root/.cache/qlm/llama-cpp-src/llama_cpp_python-0.3.36/vendor/llama.cpp/ggml

The script compiles ggml-quants.c (plus four tiny stubs for symbols that live in ggml.c) into
a shared library under /tmp with `gcc -O2 -DNDEBUG -std=gnu11 -ffp-contract=off` and calls it
through ctypes.  (ggml-quants.c used: sha256 7878680cc60493f9...)  Plain IEEE float without FMA
contraction is what llama.cpp's own x86-64 builds do: ggml-quants.c lives in ggml-base, which
gets no -march flags.  Builds where gcc's gnu11 default -ffp-contract=fast meets a target with
FMA (aarch64, or -march=native on ggml-base) fuse multiply-adds and write different k-quant
bytes for a few to ~20% of super-blocks (measured on x86-64 with -march=native); qlm
matches the portable build.

For the legacy types it also runs gguf-py's numpy quantizers (`pip install gguf numpy`, written
against gguf 0.19.0), a second independent implementation, and reports whether they agree.

--fuzz LIB N: additionally compare a shared library built from qlm's src/kernels/quants.c
(e.g. `gcc -O2 -std=c11 -shared -fPIC -Isrc src/kernels/quants.c -o /tmp/libqlmq.so -lm`) with
llama.cpp on N random rows per type; nothing is written for that.

File layout (little-endian):
  "QLMQV1\\0\\0"  u32 n_entries
  per entry: u32 type (ggml id)  u32 case id  u32 n_values  u32 n_bytes
             n_values float32 inputs   n_bytes expected block bytes
Case ids (see CASES below) name the kind of input so a failing test can say which one.

It also writes tests/data/quants/hashes.txt: for each type, the FNV-1a 64-bit hash of
llama.cpp's output for a long pseudo-random row (STRESS_VALUES floats from stress_input(), a
generator that test_quants.c reimplements exactly: xorshift64* integers scaled by powers of two,
so the floats are exact on both sides).  Lines: "<type id> <name> <n values> <seed> <hash hex>".
A handful of vectors cannot catch a wrong float evaluation order in the k-quant searches (it
changes ~0.3% of super-blocks); hashing ~2000 super-blocks per type does.

Usage: python3 tools/gen_quant_vectors.py --ggml DIR [--out PATH] [--fuzz LIB N]
"""
import argparse
import ctypes
import os
import struct
import subprocess
import sys

import numpy as np

# ggml type id -> (name of the C function suffix, block size, bytes per block)
TYPES = {
    2: ("q4_0", 32, 18), 3: ("q4_1", 32, 20), 6: ("q5_0", 32, 22), 7: ("q5_1", 32, 24),
    8: ("q8_0", 32, 34), 12: ("q4_K", 256, 144), 13: ("q5_K", 256, 176), 14: ("q6_K", 256, 210),
    15: ("q8_K", 256, 292),
}

# Stubs for the four ggml.c symbols ggml-quants.c references (only on error/validation paths).
STUBS = r"""
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <stdint.h>
void ggml_abort(const char *file, int line, const char *fmt, ...) {
  fprintf(stderr, "ggml_abort %s:%d %s\n", file, line, fmt); abort();
}
size_t ggml_type_size(int type) { (void)type; abort(); }
size_t ggml_row_size(int type, int64_t ne) { (void)type; (void)ne; abort(); }
const char *ggml_type_name(int type) { (void)type; return "?"; }
"""

CASES = {
    0: "random normal",
    1: "all zeros",
    2: "constant positive",
    3: "constant negative",
    4: "one large outlier in small noise",
    5: "tiny magnitudes (~1e-6)",
    6: "negative-dominant (largest |x| negative)",
    7: "sub-blocks of very different scales",
    8: "uniform in [0, 1) (all non-negative)",
    9: "values on quantization ties (integers / halves)",
    10: "huge magnitudes (~3e4)",
    11: "subnormal-range magnitudes (~1e-9 .. 1e-39)",
}


def build_reference(ggml_dir, out_so):
    stub = "/tmp/qlm_ggml_stubs.c"
    with open(stub, "w") as f:
        f.write(STUBS)
    # -DNDEBUG as in llama.cpp's release builds: nearest_int's range assert is then off, and
    # out-of-range values (only from inputs near the float subnormal range) follow its bit trick
    cmd = ["gcc", "-O2", "-DNDEBUG", "-std=gnu11", "-ffp-contract=off", "-fPIC", "-shared", "-w",
           "-I", os.path.join(ggml_dir, "include"), "-I", os.path.join(ggml_dir, "src"),
           os.path.join(ggml_dir, "src", "ggml-quants.c"), stub, "-o", out_so, "-lm"]
    subprocess.run(cmd, check=True)
    return ctypes.CDLL(out_so)


def call(lib, prefix, name, x, type_size, block):
    fn = getattr(lib, f"{prefix}quantize_row_{name}_ref")
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    fn.restype = None
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.zeros(len(x) // block * type_size, dtype=np.uint8)  # pre-zeroed (Q8_K bsums)
    fn(x.ctypes.data, out.ctypes.data, len(x))
    return out.tobytes()


def make_case(rng, case, n, block):
    if case == 0:
        x = rng.normal(size=n)
    elif case == 1:
        x = np.zeros(n)
    elif case == 2:
        x = np.full(n, 0.37)
    elif case == 3:
        x = np.full(n, -1.25)
    elif case == 4:
        x = rng.normal(size=n) * 0.01
        x[rng.integers(0, n, size=n // block)] = 5.0 * rng.choice([-1.0, 1.0], size=n // block)
    elif case == 5:
        x = rng.normal(size=n) * 1e-6
    elif case == 6:
        x = rng.normal(size=n) * 0.1
        for b in range(n // block):  # one strongly negative weight per block
            x[b * block + rng.integers(0, block)] = -3.0 - rng.random()
    elif case == 7:
        x = rng.normal(size=n) * np.repeat(10.0 ** rng.uniform(-4, 1, size=n // 16), 16)
    elif case == 8:
        x = rng.random(size=n)
    elif case == 9:
        x = rng.integers(-8, 8, size=n) * 0.5
    elif case == 10:
        x = rng.normal(size=n) * 3e4
    else:
        x = rng.normal(size=n) * np.repeat(10.0 ** rng.uniform(-39, -9, size=n // 16), 16)
    return x.astype(np.float32)


STRESS_VALUES = 256 * 2048
STRESS_SEED = 0x51A7E5
M64 = (1 << 64) - 1


def xorshift64s(state):
    """tests/testutil.c's tu_rand_u64: returns (new state, output)."""
    x = state or 0x9E3779B97F4A7C15
    x ^= x >> 12
    x ^= (x << 25) & M64
    x ^= x >> 27
    return x, (x * 0x2545F4914F6CDD1D) & M64


def stress_input(seed, n):
    """Per 16 values a group exponent e in -20..-5 and, one group in 4, all values made
    non-negative; each value a signed 24-bit integer times 2^e, one in 64 times 2^(e+4)."""
    out = np.empty(n, dtype=np.float32)
    s, e, pos = seed, 0, False
    for i in range(n):
        if i % 16 == 0:
            s, g = xorshift64s(s)
            e, pos = -20 + (g >> 60), ((g >> 56) & 3) == 0
        s, u = xorshift64s(s)
        v = np.ldexp(np.float32((u >> 40) - (1 << 23)), e + (4 if (u & 63) == 0 else 0)).astype(np.float32)
        out[i] = abs(v) if pos else v
    return out


def fnv1a64(data):
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & M64
    return h


def write_hashes(lib, path):
    x = stress_input(STRESS_SEED, STRESS_VALUES)
    with open(path, "w") as f:
        f.write("# type name n_values seed fnv1a64(llama.cpp quantize_row_<name>_ref output); tools/gen_quant_vectors.py\n")
        for qtype, (name, block, tsize) in TYPES.items():
            h = fnv1a64(call(lib, "", name, x, tsize, block))
            f.write(f"{qtype} {name} {STRESS_VALUES} {STRESS_SEED:#x} {h:016x}\n")
    print(f"wrote {path}")


def gguf_py_bytes(qtype, x):
    try:
        from gguf import GGMLQuantizationType
        from gguf.quants import quantize
    except ImportError:
        return None
    try:
        return quantize(x.reshape(1, -1), GGMLQuantizationType(qtype)).tobytes()
    except Exception:  # not implemented for this type in gguf-py
        return None


def rows(block):
    """Floats per case: 8 blocks of 32 for the legacy types, 2 super-blocks for k-quants."""
    return 8 * block if block == 32 else 2 * block


def generate(lib, out_path):
    rng = np.random.default_rng(20240611)
    entries = []
    gguf_report = {}
    for qtype, (name, block, tsize) in TYPES.items():
        for case in CASES:
            x = make_case(rng, case, rows(block), block)
            want = call(lib, "", name, x, tsize, block)
            entries.append((qtype, case, x, want))
            g = gguf_py_bytes(qtype, x)
            if g is not None:
                key = name
                ok, tot = gguf_report.get(key, (0, 0))
                gguf_report[key] = (ok + (g == want), tot + 1)
    with open(out_path, "wb") as f:
        f.write(b"QLMQV1\0\0" + struct.pack("<I", len(entries)))
        for qtype, case, x, want in entries:
            f.write(struct.pack("<IIII", qtype, case, len(x), len(want)))
            f.write(x.astype("<f4").tobytes())
            f.write(want)
    print(f"wrote {out_path}: {len(entries)} entries, {os.path.getsize(out_path)} bytes")
    for k, (ok, tot) in gguf_report.items():
        print(f"gguf-py {k}: {ok}/{tot} cases byte-identical to llama.cpp")


def fuzz(lib, qlm_so, n):
    qlm = ctypes.CDLL(qlm_so)
    rng = np.random.default_rng(7)
    for qtype, (name, block, tsize) in TYPES.items():
        bad = 0
        for r in range(n):
            case = r % len(CASES)
            x = make_case(rng, case, 4 * block, block)
            if r % 3 == 1:  # fresh random scales per row, heavier tails
                x = (rng.standard_t(3, size=x.size) * 10.0 ** rng.uniform(-6, 2)).astype(np.float32)
            a = call(lib, "", name, x, tsize, block)
            b = call(qlm, "qlm_", name, x, tsize, block)
            if a != b:
                bad += 1
                if bad <= 3:
                    print(f"  {name}: row {r} (case {case}) differs")
        print(f"fuzz {name}: {n - bad}/{n} rows byte-identical")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ggml", required=True, help="llama.cpp's ggml/ folder (with src/ggml-quants.c)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data", "quants", "vectors.bin"))
    ap.add_argument("--fuzz", nargs=2, metavar=("QLM_SO", "N"))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    lib = build_reference(args.ggml, "/tmp/qlm_ggml_quants_ref.so")
    if not args.no_write:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        generate(lib, args.out)
        write_hashes(lib, os.path.join(os.path.dirname(os.path.abspath(args.out)), "hashes.txt"))
    if args.fuzz:
        fuzz(lib, args.fuzz[0], int(args.fuzz[1]))


if __name__ == "__main__":
    sys.exit(main())
