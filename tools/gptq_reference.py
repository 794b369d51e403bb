#!/usr/bin/env python3
"""A torch reference of GPTQ (Frantar et al., ICLR 2023, arXiv:2210.17323, Algorithm 1 with the
lazy-batch updates, groups, static groups and act-order of the reference implementations
IST-DASLab/gptq and AutoGPTQ `fasterquant`), written from the paper and QUANT_FACTS.md section 3.
It generates tests/data/gptq/vectors.bin, which tests/test_gptq.c compares with src/quant/gptq.c.

  /root/.cache/qlm/venv-ref/bin/python tools/gptq_reference.py            # writes the fixture
  /root/.cache/qlm/venv-ref/bin/python tools/gptq_reference.py --autogptq DIR
      # also runs the real AutoGPTQ GPTQ class (auto_gptq/quantization/{gptq,quantizer}.py from an
      # unpacked auto_gptq wheel in DIR: `pip download --no-deps auto-gptq` and unzip) on the same
      # layers with this reference switched to AutoGPTQ's float32 scales, and reports agreement.

Conventions shared with qlm (see the top of src/quant/gptq.c):
  * H = 2 * hessian, hessian = X X^T / n_tokens (float64); dead inputs H_ii = 0 -> H_ii = 1, W[:, i] = 0
  * everything runs in float64, except the grid: lo/hi from the float32-rounded weights, scale
    s = (hi - lo)/maxq in float32, rounded to half (qlm stores a half scale; the smallest half
    2^-24 if it rounds to 0), zero = round(-lo/d) in float32 (asym) or 2^(b-1) (sym), and
    codes u = clamp(round(w/d) + z, 0, maxq) from that half d (torch.round: ties to even).

File layout (little-endian):
  "QLMGPTQ1", int32 rows, cols, n_cases
  float32 W[rows*cols], float64 hessian[cols*cols]
  per case: int32 bits, group (0 = per channel), asym, act_order, static_groups, block; float32 damp;
            float64 loss; uint8 codes[rows*cols] (original column order);
            float32 d[rows*ng]; int32 z[rows*ng]   (ng = cols/group, 1 per channel; with act_order and
            dynamic groups, group k is the k-th run of `group` columns in the permuted order)
The generator refuses a fixture where some w/d is within 1e-6 of a rounding tie, so exact code
equality is the right test (no legitimate change of summation order can flip a code).
"""
import argparse
import os
import struct
import sys

import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "gptq", "vectors.bin")


def grid(x, bits, sym, half=True):
    """GPTQ's min-max quantizer (AutoGPTQ quantizer.py find_params) on rows of x [rows x n]."""
    maxq = 2**bits - 1
    xf = x.float()
    zero = torch.zeros(xf.shape[0], dtype=torch.float32)
    lo = torch.minimum(xf.min(1).values, zero)
    hi = torch.maximum(xf.max(1).values, zero)
    if sym:
        hi = torch.maximum(lo.abs(), hi)
        lo = torch.where(lo < 0, -hi, lo)
    both0 = (lo == 0) & (hi == 0)
    lo = torch.where(both0, torch.full_like(lo, -1.0), lo)
    hi = torch.where(both0, torch.full_like(hi, 1.0), hi)
    s = (hi - lo) / maxq
    if half:
        s = s.half().float()
        s = torch.where(s == 0, torch.full_like(s, 2.0**-24), s)
    z = torch.full_like(s, float((maxq + 1) // 2)) if sym else torch.round(-lo / s)
    return s.double(), z.double()


def quant(w, d, z, maxq, ties):
    x = w / d
    if ties is not None:
        frac = (x - torch.floor(x) - 0.5).abs()
        ties.append(float(frac.min()))
    u = torch.clamp(torch.round(x) + z, 0, maxq)
    return u, d * (u - z)


def gptq(W, hessian, bits, group, asym, act_order, static_groups, block, damp, half=True, ties=None):
    """Returns codes [rows x cols] (original order), d and z [rows x ng], loss, Q."""
    rows, n = W.shape
    damp = float(torch.tensor(damp, dtype=torch.float32))  # qlm keeps damp as a float
    maxq = 2**bits - 1
    sym = not asym
    g = n if group <= 0 else group
    ng = n // g
    W = W.double().clone()
    H = 2.0 * hessian.double().clone()
    D = torch.zeros(rows, ng, dtype=torch.float64)
    Z = torch.zeros(rows, ng, dtype=torch.float64)
    if g == n:  # per channel: from the original weights, before dead columns are zeroed
        D[:, 0], Z[:, 0] = grid(W, bits, sym, half)
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    if g < n and static_groups:
        for k in range(ng):
            D[:, k], Z[:, k] = grid(W[:, k * g:(k + 1) * g], bits, sym, half)
    perm = torch.arange(n)
    if act_order:
        # decreasing diag(H), ties by column (stable)
        perm = torch.tensor(sorted(range(n), key=lambda i: (-float(H[i, i]), i)))
        W = W[:, perm]
        H = H[perm][:, perm]
    H += damp * torch.mean(torch.diag(H)) * torch.eye(n, dtype=torch.float64)
    L = torch.linalg.cholesky(H)
    U = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)
    Q = torch.zeros_like(W)
    codes = torch.zeros(rows, n, dtype=torch.int64)
    loss = 0.0
    cd, cz = None, None
    for i1 in range(0, n, block):
        i2 = min(i1 + block, n)
        W1 = W[:, i1:i2].clone()
        E1 = torch.zeros_like(W1)
        for i in range(i2 - i1):
            c = i1 + i
            if g == n:
                d, z = D[:, 0], Z[:, 0]
            elif static_groups:
                k = int(perm[c]) // g
                d, z = D[:, k], Z[:, k]
            else:
                if c % g == 0:  # from W: previous blocks' updates only (the reference's order)
                    cd, cz = grid(W[:, c:c + g], bits, sym, half)
                    D[:, c // g], Z[:, c // g] = cd, cz
                d, z = cd, cz
            w = W1[:, i]
            u, q = quant(w, d, z, maxq, ties)
            Q[:, c] = q
            codes[:, c] = u.long()
            e = (w - q) / U[c, c]
            loss += float((e * e).sum()) / 2.0
            W1[:, i:] -= e.unsqueeze(1) @ U[c, c:i2].unsqueeze(0)
            E1[:, i] = e
        W[:, i2:] -= E1 @ U[i1:i2, i2:]
    inv = torch.argsort(perm)
    return codes[:, inv], D, Z, loss, Q[:, inv]


def make_layer(seed, rows, cols, tokens, dead_cols):
    gen = torch.Generator().manual_seed(seed)
    W = (torch.randn(rows, cols, generator=gen, dtype=torch.float64) * 0.05).float()
    W[3, :] += 0.2  # a row with no negative values in some groups (the sym quirk)
    W[3, :] = W[3, :].abs()
    # correlated inputs: a low-rank mix plus noise, uneven channel scales
    k = 16
    A = torch.randn(cols, k, generator=gen, dtype=torch.float64)
    Zs = torch.randn(k, tokens, generator=gen, dtype=torch.float64)
    X = A @ Zs + 0.3 * torch.randn(cols, tokens, generator=gen, dtype=torch.float64)
    X *= torch.exp(0.5 * torch.randn(cols, 1, generator=gen, dtype=torch.float64))
    for c in dead_cols:
        X[c, :] = 0.0
    hessian = X @ X.T / tokens
    return W, hessian


CASES = [
    # bits, group, asym, act_order, static_groups, block, damp
    (4, 64, 1, 0, 0, 128, 0.01),  # dynamic groups starting inside blocks
    (3, 0, 0, 1, 0, 128, 0.01),  # per channel, act-order
    (4, 32, 0, 1, 1, 128, 0.01),  # act-order with static groups
    (2, 128, 1, 0, 0, 32, 0.01),  # groups spanning several blocks
    (8, 64, 0, 0, 0, 128, 0.1),
    (4, 64, 1, 0, 1, 64, 0.01),  # static groups, no act-order
    # act-order with dynamic groups (AutoGPTQ's desc_act=True, static_groups=False): d/z of group k
    # are those of permuted positions [k g, (k+1) g); codes still in the original order
    (4, 32, 1, 1, 0, 128, 0.01),
    (3, 64, 0, 1, 0, 32, 0.01),  # groups spanning blocks, sym
]


def autogptq_check(wheel_dir, W, hessian):
    """Run the real AutoGPTQ GPTQ class (float32, float scales) and compare with this reference in
    the same mode (half=False)."""
    import importlib.util
    import types
    import torch.nn as nn

    torch.cuda.synchronize = lambda *a, **k: None
    base = os.path.join(wheel_dir, "auto_gptq", "quantization")
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
    rows, cols = W.shape
    for bits, group, asym, act, static, block, damp in CASES:
        lin = nn.Linear(cols, rows, bias=False)
        lin.weight.data = W.clone().float()
        gq = mods["gptq"].GPTQ(lin)
        gq.quantizer.configure(bits, perchannel=True, sym=not asym, mse=False)
        gq.H = (2.0 * hessian).float()  # what add_batch accumulates, averaged per token
        gq.nsamples = 1
        scale, zero, g_idx = gq.fasterquant(blocksize=block, percdamp=damp, group_size=group if group else -1,
                                            actorder=bool(act), static_groups=bool(static))
        Qa = lin.weight.data.double()
        # this reference in float32-scale mode, on the float32-rounded Hessian AutoGPTQ saw
        _, _, _, _, Qr = gptq(W, gq_h32(hessian), bits, group, asym, act, static, block, damp, half=False)
        step = scale.double()[:, g_idx.long()]  # each weight's grid step
        rel = (Qa - Qr).abs() / step
        print(f"autogptq bits={bits} group={group} asym={asym} act={act} static={static} block={block}: "
              f"{float((rel < 0.5).double().mean()) * 100:.2f}% of weights on the same grid point, "
              f"max |diff|/step {float(rel.max()):.3g}")


def gq_h32(hessian):
    return ((2.0 * hessian).float().double()) / 2.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--autogptq", help="unpacked auto_gptq wheel directory")
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args()
    rows, cols, tokens = 24, 256, 1024
    W, hessian = make_layer(20240604, rows, cols, tokens, dead_cols=[5, 100])
    if args.autogptq:
        autogptq_check(args.autogptq, W, hessian)
        return
    blob = bytearray(b"QLMGPTQ1")
    blob += struct.pack("<3i", rows, cols, len(CASES))
    blob += W.float().numpy().astype("<f4").tobytes()
    blob += hessian.numpy().astype("<f8").tobytes()
    for bits, group, asym, act, static, block, damp in CASES:
        ties = []
        codes, D, Z, loss, _ = gptq(W, hessian, bits, group, asym, act, static, block, damp, ties=ties)
        closest = min(ties)
        if closest < 1e-6:
            sys.exit(f"case bits={bits} group={group}: a value within {closest:.2g} of a rounding tie; change the seed")
        print(f"bits={bits} group={group} asym={asym} act={act} static={static} block={block} damp={damp}: "
              f"loss {loss:.6g}, closest tie {closest:.2g}")
        blob += struct.pack("<6if", bits, group, asym, act, static, block, damp)
        blob += struct.pack("<d", loss)
        blob += codes.to(torch.uint8).numpy().tobytes()
        blob += D.float().numpy().astype("<f4").tobytes()
        blob += Z.to(torch.int32).numpy().astype("<i4").tobytes()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "wb") as f:
        f.write(blob)
    print(f"wrote {args.out} ({len(blob)} bytes)")


if __name__ == "__main__":
    main()
