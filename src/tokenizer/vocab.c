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

size_t qlm_utf8_valid_prefix(const char *str, size_t n) {
  const unsigned char *s = (const unsigned char *)str;
  size_t i = 0;
  while (i < n) {
    unsigned c = s[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    /* lead byte -> length and the allowed range of the second byte (excludes overlongs,
     * surrogates and > U+10FFFF); later continuation bytes are 0x80..0xBF */
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else return i;
    if (n - i < len || s[i + 1] < lo || s[i + 1] > hi) return i;
    for (size_t k = 2; k < len; k++)
      if ((s[i + k] & 0xC0) != 0x80) return i;
    i += len;
  }
  return n;
}
