#include "generate/generate.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

double qlm_now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int is_stop_token(const qlm_vocab *v, int32_t id) {
  return id == v->eos_id || (id == v->bos_id && v->bos_id >= 0);
}

/* Emit a token's text through the callback; returns the callback's verdict. */
static int emit(const qlm_tokenizer *tok, const qlm_gen_request *req, int32_t prev, int32_t id) {
  if (!req->on_piece) return 0;
  char buf[256];
  int n = qlm_token_to_piece(tok, prev, id, 0, buf, (int)sizeof buf);
  if (n > (int)sizeof buf) n = (int)sizeof buf; /* no real vocab has 256-byte pieces */
  return req->on_piece(req->ctx, id, buf, n < 0 ? 0 : n);
}

int qlm_generate(const qlm_model *m, const qlm_tokenizer *tok, qlm_state *st, qlm_sampler *smp,
                 const qlm_gen_request *req, qlm_gen_stats *stats, qlm_error *err) {
  memset(stats, 0, sizeof *stats);
  if (req->n_prompt < 1) return qlm_fail(err, QLM_EUSAGE, "generation needs at least one prompt token");
  const qlm_vocab *v = qlm_tokenizer_vocab(tok);
  float *logits = qlm_malloc((size_t)m->hp.n_vocab * sizeof *logits, "logits", err);
  if (!logits) return QLM_ENOMEM;
  qlm_state_clear(st, 0);

  double t0 = qlm_now_s();
  int rc = qlm_forward_seq(m, st, 0, 0, req->prompt, req->n_prompt, logits, err);
  stats->t_prefill_s = qlm_now_s() - t0;
  stats->n_prompt = req->n_prompt;
  if (rc) goto done;

  double t1 = qlm_now_s();
  int32_t prev = req->prompt[req->n_prompt - 1];
  int pos = req->n_prompt;
  for (int i = 0; i < req->n_predict; i++) {
    int32_t next = qlm_sample(smp, logits);
    if (req->stop_at_eos && is_stop_token(v, next)) {
      stats->stopped_by = 1;
      break;
    }
    if (req->out) req->out[i] = next;
    stats->n_generated++;
    if (emit(tok, req, prev, next)) break;
    prev = next;
    if (i + 1 == req->n_predict) break; /* no forward needed for a token nobody will sample after */
    rc = qlm_forward_seq(m, st, 0, pos, &next, 1, logits, err);
    if (rc) break;
    pos++;
  }
  stats->t_decode_s = qlm_now_s() - t1;
done:
  free(logits);
  return rc;
}
