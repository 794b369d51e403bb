#include "tokenizer/vocab.h"

#include <stdlib.h>
#include <string.h>

void qlm_vocab_init(qlm_vocab *v) {
  memset(v, 0, sizeof *v);
  v->bos_id = v->eos_id = v->unk_id = v->pad_id = -1;
  strcpy(v->pre, "default");
}

void qlm_vocab_free(qlm_vocab *v) {
  if (!v) return;
  for (int i = 0; v->tokens && i < v->n_tokens; i++) free(v->tokens[i]);
  for (int i = 0; v->merges && i < v->n_merges; i++) free(v->merges[i]);
  free(v->tokens);
  free(v->token_len);
  free(v->scores);
  free(v->token_type);
  free(v->merges);
  qlm_vocab_init(v);
}
