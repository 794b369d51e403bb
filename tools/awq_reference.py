#!/usr/bin/env python3
"""awq_reference.py — an independent numpy reference of AWQ's scale search for tests/test_awq.c.

NOT AutoAWQ itself: the autoawq package (0.2.9, an sdist) needs torch and builds CUDA kernels, so
it does not install on this CPU-only machine.  This is the search written from the paper (Lin et
al., arXiv 2306.00978) and the formulas of llm-awq / AutoAWQ as recorded in
shared/docs/QUANT_FACTS.md (non-"duo" scaling, as llm-awq; and AutoAWQ's duo scaling, its default
duo_scaling=True: s = s_x^a / (s_w^(1-a) + 1e-4) with s_w the per-channel mean over rows of |w|
normalized by its group's max |w| + 1e-6):

  s_x   = mean over tokens of |x_j|
  s     = clamp(s_x ** alpha, min=1e-4);  s = s / sqrt(max(s) * min(s)),  alpha = i/20, i = 0..19
  Q(w)  = zero-point grid per group: d = clamp(max - min, 1e-5) / (2^b - 1),
          z = clamp(-round(min / d), 0, 2^b - 1), w' = (clamp(round(w / d) + z, 0, 2^b - 1) - z) d
  loss  = mean over tokens and rows of (x W^T - x (Q(W s) / s)^T)^2    (on the real tokens)

qlm computes d in float and rounds it to a half (its storage); the reference runs in fp16, so d is
rounded to float16 here too.  The loss uses the token outputs directly, where qlm uses
tr(dW H dW^T) with H = X^T X / T (the same number times the row count).

It rebuilds test_outliers' synthetic layer bit for bit (testutil's xorshift64* generator and
Box-Muller in float32) and prints the loss per alpha and the chosen alpha for 4 and 3 bits at
group 64, and the error after llm-awq's clipping search (auto_clip, 512 sampled tokens: all 256
here); test_awq.c checks that qlm's search picks the same alpha and reaches the same errors.

Usage: python3 tools/awq_reference.py
"""
import numpy as np

M64 = (1 << 64) - 1


class Rng:
    """tests/testutil.c: tu_rand_u64 (xorshift64*), tu_rand_uniform, tu_rand_normal."""

    def __init__(self, seed):
        self.s = seed

    def u64(self):
        x = self.s if self.s else 0x9E3779B97F4A7C15
        x ^= x >> 12
        x ^= (x << 25) & M64
        x ^= x >> 27
        self.s = x
        return (x * 0x2545F4914F6CDD1D) & M64

    def uniform(self):
        return np.float32(self.u64() >> 40) / np.float32(1 << 24)

    def normal(self):
        u1, u2 = self.uniform(), self.uniform()
        if u1 < np.float32(1e-7):
            u1 = np.float32(1e-7)
        return np.float32(np.sqrt(np.float32(-2.0) * np.log(u1)) * np.cos(np.float32(6.2831853) * u2))


def pseudo_quantize(w, bits, group):
    rows, cols = w.shape
    g = w.reshape(-1, group).astype(np.float64)
    mx, mn = g.max(axis=1, keepdims=True), g.min(axis=1, keepdims=True)
    qmax = 2**bits - 1
    d = (np.maximum(mx - mn, 1e-5) / qmax).astype(np.float32).astype(np.float16).astype(np.float64)
    z = np.clip(-np.round(mn / d), 0, qmax)
    q = (np.clip(np.round(g / d) + z, 0, qmax) - z) * d
    return q.reshape(rows, cols)


def weight_means(W, group):
    """AutoAWQ's duo-scaling statistic: |w| / (max |w| of its group + 1e-6), mean over rows."""
    rows, cols = W.shape
    g = np.abs(W.astype(np.float32)).reshape(-1, group)
    ws = g / (g.max(axis=1, keepdims=True) + np.float32(1e-6))
    return ws.reshape(rows, cols).astype(np.float64).mean(axis=0)


def scales(s_x, a, w_mean=None):
    s = s_x**a
    if w_mean is not None:  # AutoAWQ duo_scaling=True (its default)
        s = s / (w_mean ** (1 - a) + 1e-4)
    s = np.maximum(s, 1e-4)
    s = s / np.sqrt(s.max() * s.min())
    s[~np.isfinite(s)] = 1.0
    return s


def search(X, W, bits, group, n_grid=20, duo=False):
    y = X @ W.T
    s_x = np.abs(X).mean(axis=0)
    w_mean = weight_means(W, group) if duo else None
    losses = []
    for i in range(n_grid):
        a = i / n_grid
        s = scales(s_x, a, w_mean)
        wq = pseudo_quantize(W * s, bits, group) / s
        losses.append(float(((y - X @ wq.T) ** 2).mean()))
    best = int(np.argmin(losses))  # first minimum, like the reference's strict "<"
    return best / n_grid, losses


def clip_search(Xs, Ws, bits, group, n_grid=20, max_shrink=0.5, n_sample_token=512):
    """auto_clip on the scaled layer: per row and group, clamp to +-max|w| (1 - i/20), i < 10, and
    keep the clamp with the smallest mean over sampled tokens of (x_g . (w_g - w'_g))^2."""
    rows, cols = Ws.shape
    step = max(1, Xs.shape[0] // n_sample_token)
    xg = Xs[::step].reshape(-1, cols // group, group)  # tokens, groups, group
    wg = Ws.reshape(rows, cols // group, group)
    amax = np.abs(wg).max(axis=2, keepdims=True)
    org = np.einsum("tgk,rgk->rtg", xg, wg)
    best_err = np.full((rows, cols // group), np.inf)
    best_m = amax.copy()
    for i in range(int(max_shrink * n_grid)):
        m = amax * (1 - i / n_grid)
        q = pseudo_quantize(np.clip(wg, -m, m).reshape(rows, cols), bits, group).reshape(wg.shape)
        err = ((np.einsum("tgk,rgk->rtg", xg, q) - org) ** 2).mean(axis=1)
        better = err < best_err
        best_err[better] = err[better]
        best_m[better] = m[better]
    return pseudo_quantize(np.clip(wg, -best_m, best_m).reshape(rows, cols), bits, group)


def main():
    T, C, R = 256, 256, 96
    gain = np.array([25.0 if (j * 7) % 64 == 5 else 1.0 for j in range(C)], dtype=np.float32)
    rng = Rng(21)
    X = np.array([[rng.normal() for _ in range(C)] for _ in range(T)], dtype=np.float32) * gain
    rng = Rng(22)
    W = np.float32(0.02) * np.array([rng.normal() for _ in range(R * C)], dtype=np.float32).reshape(R, C)
    X, W = X.astype(np.float64), W.astype(np.float64)
    for bits in (4, 3):
        alpha, losses = search(X, W, bits, 64)
        print(f"{bits}-bit g64: best alpha {alpha:.2f}; loss at alpha 0 (RTN) {losses[0]:.6g}, best {min(losses):.6g} "
              f"(x{R} = {losses[0] * R:.6g}, {min(losses) * R:.6g})")
        print("  losses:", " ".join(f"{v:.4g}" for v in losses))
        s_x = np.abs(X).mean(axis=0)
        sc = np.maximum(s_x**alpha, 1e-4)
        sc = sc / np.sqrt(sc.max() * sc.min())
        wq = clip_search(X / sc, W * sc, bits, 64) / sc
        print(f"  with the clipping search: loss {((X @ W.T - X @ wq.T) ** 2).mean():.6g} (x{R} = "
              f"{((X @ W.T - X @ wq.T) ** 2).mean() * R:.6g})")
        alpha, losses = search(X, W, bits, 64, duo=True)
        print(f"  duo scaling: best alpha {alpha:.2f}; loss at alpha 0 {losses[0]:.6g}, best {min(losses):.6g} "
              f"(x{R} = {losses[0] * R:.6g}, {min(losses) * R:.6g})")
        print("  duo losses x rows:", " ".join(f"{v * R:.6g}" for v in losses))
    print("duo w_mean[0:4] =", " ".join(f"{v:.8g}" for v in weight_means(W, 64)[:4]))


if __name__ == "__main__":
    main()
