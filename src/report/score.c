/* score.c — the combined quality × emissions metrics and repetition statistics.
 *
 * Seed 000 ranks runs by S_i = softmax(ppl)_i × CO₂_i (lower is better). softmax is invariant to
 * adding a constant to every input, so it reads perplexity *differences* in nats of probability:
 * two runs whose perplexities differ by Δ get weights in the ratio e^Δ. Perplexities of the same
 * model quantized to 8, 4 and 3 bits easily differ by 3 or more (seed 000: 10.17 vs 13.70), and
 * e^3.5 ≈ 33: the worst run takes almost all the weight and everyone else's score collapses to
 * ~0 whatever its CO₂ — the metric saturates, and its verdict changes if the same perplexities
 * are measured on another scale (another tokenizer, protocol or data set multiplies them).
 *
 * The alternative applies the same softmax to ln ppl, the mean negative log-likelihood per token
 * (nats) — the quantity perplexity exponentiates and the natural scale on which quantization
 * error adds up: L_i = softmax(ln ppl)_i × CO₂_i = ppl_i / Σ_j ppl_j × CO₂_i. Two runs' weights
 * are in the ratio of their perplexities (10.17 vs 13.70 → 1.35, not 33), so the weight never
 * saturates for any finite perplexities, and multiplying every perplexity by a constant leaves
 * every L_i unchanged (scale-robust). It keeps the seed's form (a probability-like weight over
 * the compared runs times CO₂), so the two columns can be read side by side. */
#include <math.h>

#include "report/report.h"

static int usable(double ppl, double co2) { return isfinite(ppl) && ppl > 0 && isfinite(co2); }

/* out_i = w_i / Σ_j w_j × co2_i over the usable entries, w_i = exp(x_i - max x) with x = ppl or
 * ln ppl (subtracting the max keeps exp from overflowing; the ratio is unchanged). */
static double input(double ppl, int use_log) { return use_log ? log(ppl) : ppl; }

static void weighted(const double *ppl, const double *co2, int n, int use_log, double *out) {
  double mx = -INFINITY, sum = 0;
  for (int i = 0; i < n; i++)
    if (usable(ppl[i], co2[i]) && input(ppl[i], use_log) > mx) mx = input(ppl[i], use_log);
  for (int i = 0; i < n; i++)
    if (usable(ppl[i], co2[i])) sum += exp(input(ppl[i], use_log) - mx);
  for (int i = 0; i < n; i++)
    out[i] = usable(ppl[i], co2[i]) && sum > 0 ? exp(input(ppl[i], use_log) - mx) / sum * co2[i] : NAN;
}

void qlm_score_softmax(const double *ppl, const double *co2, int n, double *out) { weighted(ppl, co2, n, 0, out); }
void qlm_score_logppl(const double *ppl, const double *co2, int n, double *out) { weighted(ppl, co2, n, 1, out); }

qlm_rep_stat qlm_rep_stat_of(const double *v, int n) {
  qlm_rep_stat s = {NAN, NAN, 0};
  double sum = 0;
  for (int i = 0; i < n; i++)
    if (isfinite(v[i])) sum += v[i], s.n++;
  if (!s.n) return s;
  s.mean = sum / s.n;
  if (s.n < 2) return s;
  double ss = 0; /* two-pass: no cancellation */
  for (int i = 0; i < n; i++)
    if (isfinite(v[i])) ss += (v[i] - s.mean) * (v[i] - s.mean);
  s.sd = sqrt(ss / (s.n - 1));
  return s;
}
