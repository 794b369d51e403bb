/* sampler.c — token sampling. Top-k and top-p are applied in that order (as llama.cpp's
 * default chain and HF's generate do), then the distribution is renormalised and sampled
 * with one uniform draw. */
#include "generate/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int32_t qlm_argmax(const float *x, int n) {
  int32_t best = 0;
  for (int i = 1; i < n; i++)
    if (x[i] > x[best]) best = i;
  return best;
}

int qlm_sampler_init(qlm_sampler *s, const qlm_sampler_params *p, int n_vocab, qlm_error *err) {
  memset(s, 0, sizeof *s);
  s->p = *p;
  s->n_vocab = n_vocab;
  s->rng = p->seed ? p->seed : 0x853c49e6748fea9bull;
  s->probs = qlm_malloc((size_t)n_vocab * sizeof *s->probs, "sampler probabilities", err);
  s->index = qlm_malloc((size_t)n_vocab * sizeof *s->index, "sampler candidates", err);
  if (!s->probs || !s->index) {
    qlm_sampler_free(s);
    return QLM_ENOMEM;
  }
  return QLM_OK;
}

void qlm_sampler_free(qlm_sampler *s) {
  free(s->probs);
  free(s->index);
  s->probs = NULL;
  s->index = NULL;
}

/* Uniform float in [0, 1) from 24 random bits. */
static float next_uniform(qlm_sampler *s) {
  uint64_t x = s->rng;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  s->rng = x;
  return (float)((x * 0x2545F4914F6CDD1Dull) >> 40) / 16777216.0f;
}

static const float *g_sort_probs; /* qsort has no context argument; sampling is single-threaded */
static int by_prob_desc(const void *a, const void *b) {
  float pa = g_sort_probs[*(const int32_t *)a], pb = g_sort_probs[*(const int32_t *)b];
  if (pa != pb) return pa < pb ? 1 : -1;
  return *(const int32_t *)a - *(const int32_t *)b;
}

int32_t qlm_sample(qlm_sampler *s, const float *logits) {
  int n = s->n_vocab;
  if (s->p.temperature <= 0.0f) return qlm_argmax(logits, n);
  /* softmax(logits / T) */
  float maxl = logits[qlm_argmax(logits, n)];
  double sum = 0;
  for (int i = 0; i < n; i++) {
    s->probs[i] = expf((logits[i] - maxl) / s->p.temperature);
    sum += s->probs[i];
    s->index[i] = i;
  }
  for (int i = 0; i < n; i++) s->probs[i] = (float)(s->probs[i] / sum);
  int keep = n;
  int sorted = (s->p.top_k > 0 && s->p.top_k < n) || s->p.top_p < 1.0f;
  if (sorted) {
    g_sort_probs = s->probs;
    qsort(s->index, (size_t)n, sizeof *s->index, by_prob_desc);
  }
  if (s->p.top_k > 0 && s->p.top_k < keep) keep = s->p.top_k;
  if (s->p.top_p < 1.0f) {
    double cum = 0;
    for (int i = 0; i < keep; i++) {
      cum += s->probs[s->index[i]];
      if (cum >= s->p.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double total = 0;
  for (int i = 0; i < keep; i++) total += s->probs[s->index[i]];
  double r = next_uniform(s) * total, cum = 0;
  for (int i = 0; i < keep; i++) {
    cum += s->probs[s->index[i]];
    if (r < cum) return s->index[i];
  }
  return s->index[keep - 1]; /* rounding left r just above the total */
}
