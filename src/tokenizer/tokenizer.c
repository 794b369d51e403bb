/* tokenizer.c — the qlm_tokenizer object: lookup tables, special-token splitting, encode
 * dispatch (SPM / BPE) and decoding.  The merge algorithms live in spm.c and bpe.c. */
#include "tokenizer/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"

#define TOK_MAX_TOKEN_BYTES (1 << 16) /* longer token texts are not real tokens */

/* ---- small helpers -------------------------------------------------------------------- */

int tok_reserve(void **p, size_t *cap, size_t need, size_t elem, qlm_error *err) {
  if (need <= *cap) return 0;
  size_t n = *cap ? *cap : 64, bytes;
  while (n < need) {
    if (qlm_mul_overflow(n, 2, &n)) return qlm_fail(err, QLM_ELIMIT, "tokenizer: buffer of %zu items too large", need);
  }
  if (qlm_mul_overflow(n, elem, &bytes)) return qlm_fail(err, QLM_ELIMIT, "tokenizer: buffer of %zu items too large", n);
  void *q = realloc(*p, bytes);
  if (!q) return qlm_fail(err, QLM_ENOMEM, "tokenizer: out of memory for %zu bytes of scratch", bytes);
  *p = q;
  *cap = n;
  return 0;
}

int tok_ids_push(tok_ids *o, int32_t id, qlm_error *err) {
  if (o->n == o->cap) {
    if (o->cap >= (1 << 29)) return qlm_fail(err, QLM_ELIMIT, "tokenizer: more than %d tokens", 1 << 29);
    size_t cap = (size_t)o->cap;
    if (tok_reserve((void **)&o->v, &cap, (size_t)o->n + 1, sizeof(int32_t), err)) return err ? err->code : QLM_ENOMEM;
    o->cap = (int)(cap > (1u << 29) ? (1u << 29) : cap);
  }
  o->v[o->n++] = id;
  return 0;
}

void tok_session_free(tok_session *s) {
  free(s->syms);
  free(s->heap.a);
  free(s->buf);
  free(s->spans);
  free(s->spans2);
  if (s->md) pcre2_match_data_free(s->md);
  memset(s, 0, sizeof *s);
}

/* Binary heap of bigrams: the best (smallest key, then leftmost) on top. */
static int bigram_before(const tok_bigram *a, const tok_bigram *b) {
  return a->key < b->key || (a->key == b->key && a->left < b->left);
}

int tok_heap_push(tok_heap *h, tok_bigram b, qlm_error *err) {
  size_t cap = (size_t)h->cap;
  if (tok_reserve((void **)&h->a, &cap, (size_t)h->n + 1, sizeof(tok_bigram), err)) return err ? err->code : QLM_ENOMEM;
  h->cap = (int)cap;
  int i = h->n++;
  while (i > 0) {
    int p = (i - 1) / 2;
    if (!bigram_before(&b, &h->a[p])) break;
    h->a[i] = h->a[p];
    i = p;
  }
  h->a[i] = b;
  return 0;
}

tok_bigram tok_heap_pop(tok_heap *h) {
  tok_bigram top = h->a[0], last = h->a[--h->n];
  int i = 0;
  for (;;) {
    int c = 2 * i + 1;
    if (c >= h->n) break;
    if (c + 1 < h->n && bigram_before(&h->a[c + 1], &h->a[c])) c++;
    if (!bigram_before(&h->a[c], &last)) break;
    h->a[i] = h->a[c];
    i = c;
  }
  if (h->n > 0) h->a[i] = last;
  return top;
}

/* ---- token text -> id hash ----------------------------------------------------------- */

static uint32_t hash_bytes(const char *s, size_t n) {
  uint32_t h = 2166136261u; /* FNV-1a */
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
  return h;
}

int32_t tok_strmap_find(const tok_strmap *m, const qlm_vocab *v, const char *s, size_t n) {
  for (uint32_t i = hash_bytes(s, n) & m->mask;; i = (i + 1) & m->mask) {
    int32_t id = m->slots[i];
    if (id < 0) return -1;
    if ((size_t)v->token_len[id] == n && memcmp(v->tokens[id], s, n) == 0) return id;
  }
}

int tok_strmap_build(tok_strmap *m, const qlm_vocab *v, qlm_error *err) {
  uint32_t cap = 16;
  while (cap < 2u * (uint32_t)v->n_tokens) cap *= 2;
  m->mask = cap - 1;
  m->slots = malloc(sizeof(int32_t) * cap);
  if (!m->slots) return qlm_fail(err, QLM_ENOMEM, "tokenizer: out of memory for the token hash");
  memset(m->slots, 0xff, sizeof(int32_t) * cap);
  for (int32_t id = 0; id < v->n_tokens; id++) {
    const char *s = v->tokens[id];
    size_t n = (size_t)v->token_len[id];
    uint32_t i = hash_bytes(s, n) & m->mask;
    while (m->slots[i] >= 0) {
      int32_t o = m->slots[i];
      if ((size_t)v->token_len[o] == n && memcmp(v->tokens[o], s, n) == 0) break; /* duplicate: last wins */
      i = (i + 1) & m->mask;
    }
    m->slots[i] = id;
  }
  return 0;
}

int tok_attr(const qlm_vocab *v, int32_t id) {
  return v->token_type ? v->token_type[id] : QLM_TOKATTR_NORMAL;
}

/* ---- special tokens ------------------------------------------------------------------- */

static int special_cmp(const void *a, const void *b, void *ctx) {
  const qlm_vocab *v = ctx;
  int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
  unsigned char fx = (unsigned char)v->tokens[x][0], fy = (unsigned char)v->tokens[y][0];
  if (fx != fy) return fx < fy ? -1 : 1;
  int lx = v->token_len[x], ly = v->token_len[y];
  if (lx != ly) return lx > ly ? -1 : 1;
  return x < y ? -1 : x > y;
}

static int is_special_attr(int a) {
  return a == QLM_TOKATTR_CONTROL || a == QLM_TOKATTR_USER_DEFINED || a == QLM_TOKATTR_UNKNOWN;
}

static int special_build(tok_special *sp, const qlm_vocab *v, qlm_error *err) {
  int n = 0;
  for (int32_t id = 0; id < v->n_tokens; id++)
    if (is_special_attr(tok_attr(v, id)) && v->token_len[id] > 0) n++;
  sp->ids = malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
  if (!sp->ids) return qlm_fail(err, QLM_ENOMEM, "tokenizer: out of memory for special tokens");
  sp->n = 0;
  for (int32_t id = 0; id < v->n_tokens; id++)
    if (is_special_attr(tok_attr(v, id)) && v->token_len[id] > 0) sp->ids[sp->n++] = id;
  qsort_r(sp->ids, (size_t)sp->n, sizeof(int32_t), special_cmp, (void *)v);
  int k = 0;
  for (int b = 0; b <= 256; b++) {
    while (k < sp->n && (unsigned char)v->tokens[sp->ids[k]][0] < b) k++;
    sp->first[b] = k;
  }
  sp->first[256] = sp->n;
  return 0;
}

/* Longest special token starting at text[pos] (USER_DEFINED always; CONTROL/UNKNOWN only
 * when parse_special, as llama.cpp does), or -1. */
static int32_t special_at(const qlm_tokenizer *tok, const char *text, size_t len, size_t pos, int parse_special) {
  const tok_special *sp = &tok->special;
  unsigned char b = (unsigned char)text[pos];
  for (int k = sp->first[b]; k < sp->first[b + 1]; k++) {
    int32_t id = sp->ids[k];
    if (!parse_special && tok_attr(tok->v, id) != QLM_TOKATTR_USER_DEFINED) continue;
    size_t n = (size_t)tok->v->token_len[id];
    if (n <= len - pos && memcmp(text + pos, tok->v->tokens[id], n) == 0) return id;
  }
  return -1;
}

/* ---- construction ---------------------------------------------------------------------- */

static int vocab_check(const qlm_vocab *v, qlm_error *err) {
  if (v->n_tokens <= 0 || !v->tokens || !v->token_len)
    return qlm_fail(err, QLM_EFORMAT, "tokenizer: vocab has no tokens");
  if (v->n_tokens > (1 << 24)) return qlm_fail(err, QLM_ELIMIT, "tokenizer: %d tokens exceed 2^24", v->n_tokens);
  for (int i = 0; i < v->n_tokens; i++) {
    if (!v->tokens[i] || v->token_len[i] < 0 || v->token_len[i] > TOK_MAX_TOKEN_BYTES)
      return qlm_fail(err, QLM_EFORMAT, "tokenizer: token %d has no text or a bad length", i);
  }
  int ids[4] = {v->bos_id, v->eos_id, v->unk_id, v->pad_id};
  for (int i = 0; i < 4; i++)
    if (ids[i] < -1 || ids[i] >= v->n_tokens)
      return qlm_fail(err, QLM_EFORMAT, "tokenizer: special token id %d out of range (%d tokens)", ids[i], v->n_tokens);
  return 0;
}

int qlm_tokenizer_new(const qlm_vocab *vocab, qlm_tokenizer **out, qlm_error *err) {
  *out = NULL;
  if (vocab->kind != QLM_TOK_SPM && vocab->kind != QLM_TOK_BPE)
    return qlm_fail(err, QLM_EUNSUPPORTED, "tokenizer: unsupported vocab kind %d", (int)vocab->kind);
  int rc = vocab_check(vocab, err);
  if (rc) return rc;
  qlm_tokenizer *tok = calloc(1, sizeof *tok);
  if (!tok) return qlm_fail(err, QLM_ENOMEM, "tokenizer: out of memory");
  tok->v = vocab;
  if ((rc = tok_strmap_build(&tok->text2id, vocab, err)) || (rc = special_build(&tok->special, vocab, err))) goto fail;
  if (vocab->kind == QLM_TOK_SPM) {
    for (int b = 0; b < 256; b++) {
      char name[8];
      snprintf(name, sizeof name, "<0x%02X>", b);
      tok->byte_tok[b] = tok_strmap_find(&tok->text2id, vocab, name, 6);
    }
  } else if ((rc = tok_bpe_init(tok, err))) {
    goto fail;
  }
  *out = tok;
  return 0;
fail:
  qlm_tokenizer_free(tok);
  return rc;
}

void qlm_tokenizer_free(qlm_tokenizer *tok) {
  if (!tok) return;
  free(tok->text2id.slots);
  free(tok->special.ids);
  tok_bpe_free(tok);
  free(tok);
}

const qlm_vocab *qlm_tokenizer_vocab(const qlm_tokenizer *tok) { return tok->v; }

/* ---- encoding -------------------------------------------------------------------------- */

/* Offset of the first invalid UTF-8 sequence (overlong forms, surrogates and code points
 * above U+10FFFF are invalid), or len when the text is valid. */
static size_t utf8_invalid_at(const unsigned char *s, size_t len) {
  size_t i = 0;
  while (i < len) {
    unsigned char c = s[i];
    if (c < 0x80) { i++; continue; }
    int n = tok_utf8_len(c);
    if (n == 1 || i + (size_t)n > len) return i;
    uint32_t cp = c & (0x7f >> n);
    for (int k = 1; k < n; k++) {
      if ((s[i + k] & 0xc0) != 0x80) return i;
      cp = (cp << 6) | (s[i + k] & 0x3f);
    }
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
    i += (size_t)n;
  }
  return len;
}

static int encode_raw(const qlm_tokenizer *tok, tok_session *s, const char *text, size_t len, int after_special,
                      tok_ids *out, qlm_error *err) {
  if (len == 0) return 0;
  if (tok->v->kind == QLM_TOK_SPM)
    return tok_spm_encode(tok, s, text, len, tok->v->add_space_prefix && after_special, out, err);
  return tok_bpe_encode(tok, s, text, len, out, err);
}

int qlm_tokenize(const qlm_tokenizer *tok, const char *text, size_t len, int add_special, int parse_special,
                 int32_t **ids, int *n_ids, qlm_error *err) {
  *ids = NULL;
  *n_ids = 0;
  size_t bad = utf8_invalid_at((const unsigned char *)text, len);
  if (bad < len)
    return qlm_fail(err, QLM_EFORMAT, "tokenize: invalid UTF-8 at byte offset %zu (byte 0x%02x)", bad,
                    (unsigned char)text[bad]);
  if (len > (size_t)1 << 30) return qlm_fail(err, QLM_ELIMIT, "tokenize: text of %zu bytes exceeds 1 GiB", len);
  tok_ids out = {0};
  tok_session s = {0};
  const qlm_vocab *v = tok->v;
  int rc = 0;
  if (add_special && v->add_bos && v->bos_id >= 0 && (rc = tok_ids_push(&out, v->bos_id, err))) goto done;
  /* Split the text at special tokens (leftmost, longest); encode the raw runs between them.
   * SPM adds its space prefix at the start and after every special token (as llama.cpp). */
  size_t run = 0, pos = 0;
  int after_special = 1;
  while (pos < len) {
    int32_t id = tok->special.n ? special_at(tok, text, len, pos, parse_special) : -1;
    if (id < 0) {
      pos += (size_t)tok_utf8_len((unsigned char)text[pos]);
      continue;
    }
    if (pos > run) {
      if ((rc = encode_raw(tok, &s, text + run, pos - run, after_special, &out, err))) goto done;
    }
    if ((rc = tok_ids_push(&out, id, err))) goto done;
    after_special = 1;
    pos += (size_t)v->token_len[id];
    run = pos;
  }
  if (len > run && (rc = encode_raw(tok, &s, text + run, len - run, after_special, &out, err))) goto done;
  if (add_special && v->add_eos && v->eos_id >= 0 && (rc = tok_ids_push(&out, v->eos_id, err))) goto done;
done:
  tok_session_free(&s);
  if (rc) {
    free(out.v);
    return rc;
  }
  if (!out.v) out.v = malloc(sizeof(int32_t)); /* a valid pointer even for no tokens */
  if (!out.v) return qlm_fail(err, QLM_ENOMEM, "tokenize: out of memory");
  *ids = out.v;
  *n_ids = out.n;
  return 0;
}

/* ---- decoding -------------------------------------------------------------------------- */

/* Append n bytes to buf (cap bytes), counting the full length in *len. */
static void put(char *buf, int cap, int *len, const char *s, int n) {
  for (int i = 0; i < n; i++, (*len)++)
    if (*len < cap) buf[*len] = s[i];
}

static int hexval(char c) {
  return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static int spm_piece(const qlm_tokenizer *tok, int32_t prev, int32_t id, char *buf, int cap) {
  const qlm_vocab *v = tok->v;
  const char *t = v->tokens[id];
  int n = v->token_len[id], len = 0, attr = tok_attr(v, id);
  if (attr == QLM_TOKATTR_BYTE || (n == 6 && t[0] == '<' && t[1] == '0' && t[2] == 'x' && t[5] == '>')) {
    int hi = hexval(t[3]), lo = hexval(t[4]);
    if (n == 6 && hi >= 0 && lo >= 0) {
      char c = (char)(hi * 16 + lo);
      put(buf, cap, &len, &c, 1);
      return len;
    }
  }
  /* The space prefix added at encoding time is not part of the text: drop it from the
   * first piece of a sequence (prev == -1) or the piece right after BOS. */
  int strip = v->add_space_prefix && (prev < 0 || prev == v->bos_id);
  for (int i = 0; i < n;) {
    if (i + 3 <= n && memcmp(t + i, "\xe2\x96\x81", 3) == 0) {
      if (!(strip && i == 0)) put(buf, cap, &len, " ", 1);
      i += 3;
    } else {
      if (strip && i == 0 && t[0] == ' ') { i++; continue; }
      put(buf, cap, &len, t + i, 1);
      i++;
    }
  }
  return len;
}

static int bpe_piece(const qlm_tokenizer *tok, int32_t id, char *buf, int cap) {
  const qlm_vocab *v = tok->v;
  const unsigned char *t = (const unsigned char *)v->tokens[id];
  int n = v->token_len[id], len = 0;
  if (tok_attr(v, id) == QLM_TOKATTR_USER_DEFINED) { /* added tokens are stored as plain text */
    put(buf, cap, &len, (const char *)t, n);
    return len;
  }
  for (int i = 0; i < n;) {
    int k = tok_utf8_len(t[i]);
    if (i + k > n) k = n - i;
    uint32_t cp = k == 1 ? t[i] : (uint32_t)(t[i] & (0x7f >> k));
    for (int j = 1; j < k; j++) cp = (cp << 6) | (t[i + j] & 0x3f);
    int b = tok_unicode_to_byte(cp);
    if (b >= 0) {
      char c = (char)b;
      put(buf, cap, &len, &c, 1);
    } else {
      put(buf, cap, &len, (const char *)t + i, k); /* not a byte stand-in: keep the character */
    }
    i += k;
  }
  return len;
}

int qlm_token_to_piece(const qlm_tokenizer *tok, int32_t prev, int32_t id, int render_special, char *buf, int cap) {
  const qlm_vocab *v = tok->v;
  if (id < 0 || id >= v->n_tokens) return 0;
  int attr = tok_attr(v, id), len = 0;
  if (attr == QLM_TOKATTR_CONTROL || attr == QLM_TOKATTR_UNKNOWN || attr == QLM_TOKATTR_UNUSED) {
    if (render_special) put(buf, cap, &len, v->tokens[id], v->token_len[id]);
    return len;
  }
  return v->kind == QLM_TOK_SPM ? spm_piece(tok, prev, id, buf, cap) : bpe_piece(tok, id, buf, cap);
}

int qlm_detokenize(const qlm_tokenizer *tok, const int32_t *ids, int n_ids, int render_special, char **out,
                   qlm_error *err) {
  *out = NULL;
  size_t cap = 0, len = 0;
  char *s = NULL;
  if (tok_reserve((void **)&s, &cap, 256, 1, err)) return err ? err->code : QLM_ENOMEM;
  for (int i = 0; i < n_ids; i++) {
    if (ids[i] < 0 || ids[i] >= tok->v->n_tokens) {
      free(s);
      return qlm_fail(err, QLM_EFORMAT, "detokenize: token id %d at position %d out of range (%d tokens)", ids[i], i,
                      tok->v->n_tokens);
    }
    int32_t prev = i > 0 ? ids[i - 1] : -1;
    int n = qlm_token_to_piece(tok, prev, ids[i], render_special, NULL, 0);
    size_t need;
    if (qlm_add_overflow(len, (size_t)n + 1, &need) || tok_reserve((void **)&s, &cap, need, 1, err)) {
      free(s);
      return err && err->code ? err->code : qlm_fail(err, QLM_ELIMIT, "detokenize: output too large");
    }
    len += (size_t)qlm_token_to_piece(tok, prev, ids[i], render_special, s + len, n);
  }
  s[len] = '\0';
  *out = s;
  return 0;
}
