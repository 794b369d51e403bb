/* spm.c — SentencePiece-style BPE (llama / llama2 / phi-3 vocabs).
 *
 * The text (spaces replaced by "▁", optionally with a "▁" prefix) is split into UTF-8
 * characters; then, repeatedly, the adjacent pair whose concatenation is a vocab token with
 * the highest score is merged (ties: the leftmost pair).  Characters left that are not
 * tokens fall back to their <0xXX> byte tokens, or to unk. */
#include <string.h>

#include "tokenizer/tok_internal.h"

/* Queue the merge of symbols l and r if their concatenation is a normal token. */
static int spm_try_bigram(const struct qlm_tokenizer *tok, tok_session *s, const char *text, int l, int r,
                          qlm_error *err) {
  if (l < 0 || r < 0) return 0;
  const tok_sym *a = &s->syms[l], *b = &s->syms[r];
  int32_t id = tok_strmap_find(&tok->text2id, tok->v, text + a->off, (size_t)(a->n + b->n));
  /* Only normal tokens are merge results (as in SentencePiece): control texts such as
   * "<s>" or byte tokens "<0x41>" must not be assembled from plain characters. */
  if (id < 0 || tok_attr(tok->v, id) != QLM_TOKATTR_NORMAL) return 0;
  float score = tok->v->scores ? tok->v->scores[id] : 0.0f;
  tok_bigram bg = {.key = -(double)score, .left = l, .right = r, .size = a->n + b->n, .result = id};
  return tok_heap_push(&s->heap, bg, err);
}

/* Emit the tokens of one final symbol: itself if it is a token, else its bytes. */
static int spm_emit(const struct qlm_tokenizer *tok, const char *text, const tok_sym *sym, tok_ids *out,
                    qlm_error *err) {
  int32_t id = tok_strmap_find(&tok->text2id, tok->v, text + sym->off, (size_t)sym->n);
  if (id >= 0) return tok_ids_push(out, id, err);
  for (int i = 0; i < sym->n; i++) {
    int32_t b = tok->byte_tok[(unsigned char)text[sym->off + i]];
    if (b < 0) { /* no byte fallback: the whole character becomes unk */
      return tok->v->unk_id >= 0 ? tok_ids_push(out, tok->v->unk_id, err) : 0;
    }
    int rc = tok_ids_push(out, b, err);
    if (rc) return rc;
  }
  return 0;
}

int tok_spm_encode(const struct qlm_tokenizer *tok, tok_session *s, const char *text, size_t len, int add_prefix,
                   tok_ids *out, qlm_error *err) {
  /* Escape: optional "▁" prefix, then every ' ' -> "▁" (3 bytes). */
  size_t need = 3, tmp;
  if (qlm_mul_overflow(len, 3, &tmp) || qlm_add_overflow(need, tmp, &need) || need > (size_t)1 << 31)
    return qlm_fail(err, QLM_ELIMIT, "tokenize: text of %zu bytes too long", len);
  int rc = tok_reserve((void **)&s->buf, &s->buf_cap, need, 1, err);
  if (rc) return rc;
  size_t n = 0;
  if (add_prefix) { memcpy(s->buf, "\xe2\x96\x81", 3); n = 3; }
  for (size_t i = 0; i < len; i++) {
    if (text[i] == ' ') { memcpy(s->buf + n, "\xe2\x96\x81", 3); n += 3; }
    else s->buf[n++] = text[i];
  }
  const char *t = s->buf;

  /* One symbol per UTF-8 character (the text was validated by the caller). */
  if ((rc = tok_reserve((void **)&s->syms, &s->syms_cap, n, sizeof(tok_sym), err))) return rc;
  int nsym = 0;
  for (size_t off = 0; off < n;) {
    int k = tok_utf8_len((unsigned char)t[off]);
    if ((size_t)k > n - off) k = (int)(n - off);
    s->syms[nsym] = (tok_sym){.off = (int)off, .n = k, .prev = nsym - 1, .next = off + (size_t)k < n ? nsym + 1 : -1, .id = -1};
    nsym++;
    off += (size_t)k;
  }
  s->heap.n = 0;
  for (int i = 1; i < nsym; i++)
    if ((rc = spm_try_bigram(tok, s, t, i - 1, i, err))) return rc;

  while (s->heap.n > 0) {
    tok_bigram bg = tok_heap_pop(&s->heap);
    tok_sym *l = &s->syms[bg.left], *r = &s->syms[bg.right];
    if (l->n == 0 || r->n == 0 || l->next != bg.right || l->n + r->n != bg.size) continue; /* stale */
    l->n += r->n;
    r->n = 0;
    l->next = r->next;
    if (r->next >= 0) s->syms[r->next].prev = bg.left;
    if ((rc = spm_try_bigram(tok, s, t, l->prev, bg.left, err))) return rc;
    if ((rc = spm_try_bigram(tok, s, t, bg.left, l->next, err))) return rc;
  }
  for (int i = 0; i >= 0 && nsym > 0; i = s->syms[i].next)
    if ((rc = spm_emit(tok, t, &s->syms[i], out, err))) return rc;
  return 0;
}
