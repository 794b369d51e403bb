/* generate.h — prompt -> tokens: prefill the prompt as one batch, then decode one token at a time. */
#ifndef QLM_GENERATE_H
#define QLM_GENERATE_H

#include <stdint.h>

#include "core/error.h"
#include "generate/sampler.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

typedef struct qlm_gen_stats {
  int n_prompt;       /* tokens prefilled */
  int n_generated;    /* tokens sampled */
  double t_prefill_s; /* wall time of the prefill forward */
  double t_decode_s;  /* wall time of all decode forwards and sampling */
  int stopped_by;     /* 0 = n_predict reached (or the callback stopped it), 1 = end-of-sequence token */
} qlm_gen_stats;

/* Called with each generated token's text as soon as it is sampled; return non-zero to stop. */
typedef int (*qlm_piece_fn)(void *ctx, int32_t token, const char *piece, int len);

typedef struct qlm_gen_request {
  const int32_t *prompt; /* [n_prompt] token ids, >= 1 */
  int n_prompt;
  int n_predict;         /* tokens to generate at most */
  int stop_at_eos;       /* stop when EOS (or BOS, as llama2.c does) is sampled */
  qlm_piece_fn on_piece; /* may be NULL */
  void *ctx;
  int32_t *out;          /* [n_predict] receives the generated ids, or NULL */
} qlm_gen_request;

/* Runs on sequence 0 of `st` from position 0 (the sequence is cleared first); the state must hold
 * n_prompt + n_predict positions. */
int qlm_generate(const qlm_model *m, const qlm_tokenizer *tok, qlm_state *st, qlm_sampler *smp,
                 const qlm_gen_request *req, qlm_gen_stats *stats, qlm_error *err);

double qlm_now_s(void); /* monotonic clock, seconds */

#endif
