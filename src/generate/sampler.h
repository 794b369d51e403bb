/* sampler.h — choosing the next token from logits: greedy, temperature, top-k, top-p. */
#ifndef QLM_SAMPLER_H
#define QLM_SAMPLER_H

#include <stdint.h>

#include "core/error.h"

typedef struct qlm_sampler_params {
  float temperature; /* 0 = greedy (argmax) */
  int top_k;         /* keep the k most likely tokens; <= 0 = all */
  float top_p;       /* keep the smallest set whose probability reaches p; >= 1 = all */
  uint64_t seed;     /* seed of the random stream: same seed, same logits -> same tokens */
} qlm_sampler_params;

typedef struct qlm_sampler {
  qlm_sampler_params p;
  int n_vocab;
  uint64_t rng;    /* xorshift64* state */
  float *probs;    /* [n_vocab] scratch */
  int32_t *index;  /* [n_vocab] scratch: candidate ids */
} qlm_sampler;

int qlm_sampler_init(qlm_sampler *s, const qlm_sampler_params *p, int n_vocab, qlm_error *err);
void qlm_sampler_free(qlm_sampler *s);
/* Pick a token from logits[n_vocab] (logits are not modified). */
int32_t qlm_sample(qlm_sampler *s, const float *logits);
/* Index of the largest value (first one on ties). */
int32_t qlm_argmax(const float *x, int n);

#endif
