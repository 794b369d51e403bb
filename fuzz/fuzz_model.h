/* fuzz_model.h — after a reader accepted an input: touch every tensor, and when the model is
 * small enough build it and run one token through it (so a source that passes the reader's
 * checks but would make the loader or the forward pass read out of bounds is caught). */
#ifndef QLM_FUZZ_MODEL_H
#define QLM_FUZZ_MODEL_H

#include "formats/source.h"
#include "fuzz_common.h"
#include "model/model.h"

/* Budget for the forward pass: a fuzzer must stay fast (thousands of executions a second). */
#define FUZZ_MAX_PARAMS (1 << 20)
#define FUZZ_MAX_DIM 4096

static inline void fuzz_run_source(const qlm_source *src) {
  for (int i = 0; i < src->n_tensors; i++) fuzz_touch(src->tensors[i].data, src->tensors[i].nbytes);
  const qlm_hparams *hp = &src->hp;
  if (qlm_source_n_params(src) > FUZZ_MAX_PARAMS || hp->n_embd > FUZZ_MAX_DIM || hp->n_ff > FUZZ_MAX_DIM ||
      hp->n_vocab > 65536 || hp->n_layer > 64)
    return;
  qlm_error err = {0};
  qlm_model *m = NULL;
  if (qlm_model_load(src, &m, &err)) return;
  qlm_state *s = NULL;
  if (qlm_state_new(m, 1, 4, 2, 1, &s, &err) == 0) {
    float *logits = malloc((size_t)hp->n_vocab * sizeof *logits);
    int32_t tok = hp->n_vocab > 1 ? 1 : 0, pos = 0, seq = 0;
    qlm_batch b = {.n = 1, .token = &tok, .pos = &pos, .seq = &seq, .want_logits = NULL};
    if (logits) qlm_forward(m, s, &b, logits, &err);
    free(logits);
    qlm_state_free(s);
  }
  qlm_model_free(m);
}

#endif
