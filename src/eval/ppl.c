/* ppl.c — perplexity protocols (text -> windows) and the batched scorer (windows -> NLL). */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "eval/ppl.h"

#include "model/numerics.h"

#include <math.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const protocol_names[] = {"hf-window", "per-line", "llamacpp", "lm-eval"};

const char *qlm_ppl_protocol_name(int protocol) {
  return protocol >= 0 && protocol < 4 ? protocol_names[protocol] : "?";
}

int qlm_ppl_protocol_parse(const char *name) {
  for (int i = 0; i < 4; i++)
    if (strcmp(name, protocol_names[i]) == 0) return i;
  return -1;
}

void qlm_ppl_plan_free(qlm_ppl_plan *p) {
  if (!p) return;
  free(p->tokens);
  free(p->win);
  memset(p, 0, sizeof *p);
}

static int add_window(qlm_ppl_plan *p, qlm_ppl_window w, qlm_error *err) {
  if (w.begin < 0 || w.end > p->n_tokens || w.begin >= w.end || w.score_from < w.begin || w.score_from > w.end ||
      (w.prefix < 0 && w.score_from == w.begin))
    return qlm_fail(err, QLM_EINTERNAL, "perplexity: bad window [%lld, %lld) scoring from %lld", (long long)w.begin,
                    (long long)w.end, (long long)w.score_from);
  if (p->n_win == p->cap_win) {
    int64_t cap = p->cap_win ? p->cap_win * 2 : 64;
    qlm_ppl_window *nw = realloc(p->win, (size_t)cap * sizeof *nw);
    if (!nw) return qlm_fail(err, QLM_ENOMEM, "perplexity: out of memory for %lld windows", (long long)cap);
    p->win = nw;
    p->cap_win = cap;
  }
  p->win[p->n_win++] = w;
  int64_t rows = (w.prefix >= 0) + (w.end - 1 - w.begin);
  if (rows > p->max_rows) p->max_rows = (int)rows;
  return QLM_OK;
}

/* HF guide: begin_loc = 0, stride, 2*stride...; end_loc = min(begin + max_len, n); the targets are
 * the tokens after the previous window's end (the first window: all but its first token). */
int qlm_ppl_add_hf_windows(qlm_ppl_plan *p, int64_t begin, int64_t end, int max_len, int stride, qlm_error *err) {
  if (max_len < 2 || stride < 1 || stride > max_len)
    return qlm_fail(err, QLM_EUSAGE, "hf windows: need max_length >= 2 and 1 <= stride <= max_length (got %d, %d)",
                    max_len, stride);
  int64_t prev_end = begin;
  for (int64_t b = begin; end - begin >= 2 && b < end; b += stride) {
    int64_t e = b + max_len < end ? b + max_len : end;
    int64_t from = prev_end > b + 1 ? prev_end : b + 1;
    if (from < e) {
      int rc = add_window(p, (qlm_ppl_window){.begin = b, .end = e, .score_from = from, .prefix = -1, .replace_first = -1}, err);
      if (rc) return rc;
    }
    prev_end = e;
    if (e == end) break;
  }
  return QLM_OK;
}

/* llama.cpp: n_chunk = n / n_ctx chunks; positions first = n_ctx/2 .. n_ctx-2 predict the next token. */
int qlm_ppl_add_llamacpp_chunks(qlm_ppl_plan *p, int n_ctx, int32_t bos, qlm_error *err) {
  if (n_ctx < 4) return qlm_fail(err, QLM_EUSAGE, "llamacpp: n_ctx %d is too small (at least 4)", n_ctx);
  if (p->n_tokens < 2 * (int64_t)n_ctx)
    return qlm_fail(err, QLM_EUSAGE, "llamacpp: the text has %lld tokens; at least 2*n_ctx = %d are needed (as llama.cpp requires)",
                    (long long)p->n_tokens, 2 * n_ctx);
  int64_t n_chunk = p->n_tokens / n_ctx;
  int first = n_ctx / 2;
  for (int64_t c = 0; c < n_chunk; c++) {
    int64_t b = c * n_ctx;
    int rc = add_window(p, (qlm_ppl_window){.begin = b, .end = b + n_ctx, .score_from = b + first + 1, .prefix = -1,
                                            .replace_first = bos}, err);
    if (rc) return rc;
  }
  return QLM_OK;
}

/* lm-eval get_rolling_token_windows with context_len 1: the first window is [prefix] + tokens[:L-1]
 * predicting tokens[:L]; each later one predicts the next min(max_len, left) tokens from an input
 * right-aligned to end one token before the window's end. */
int qlm_ppl_add_rolling_windows(qlm_ppl_plan *p, int64_t begin, int64_t end, int max_len, int32_t prefix,
                                qlm_error *err) {
  if (max_len < 1) return qlm_fail(err, QLM_EUSAGE, "rolling windows: max_length %d must be >= 1", max_len);
  if (prefix < 0) return qlm_fail(err, QLM_EUSAGE, "rolling windows: the tokenizer has neither BOS nor EOS for the prefix");
  int64_t n = end - begin;
  if (n <= 0) return QLM_OK;
  int64_t first = n < max_len ? n : max_len;
  int rc = add_window(p, (qlm_ppl_window){.begin = begin, .end = begin + first, .score_from = begin, .prefix = prefix,
                                          .replace_first = -1}, err);
  for (int64_t done = first; !rc && done < n;) {
    int64_t pred = n - done < max_len ? n - done : max_len;
    int64_t wend = begin + done + pred;
    rc = add_window(p, (qlm_ppl_window){.begin = wend - max_len - 1, .end = wend, .score_from = wend - pred, .prefix = -1,
                                        .replace_first = -1}, err);
    done += pred;
  }
  return rc;
}

int64_t qlm_ppl_plan_scored(const qlm_ppl_plan *p) {
  int64_t n = 0;
  for (int64_t i = 0; i < p->n_win; i++) n += p->win[i].end - p->win[i].score_from;
  return n;
}

/* ---- text -> tokens ---- */

/* Append n ids to the plan's token array. */
static int append_tokens(qlm_ppl_plan *p, const int32_t *ids, int n, int64_t *cap, qlm_error *err) {
  if (p->n_tokens + n > *cap) {
    int64_t c = *cap ? *cap : 4096;
    while (c < p->n_tokens + n) c *= 2;
    int32_t *t = realloc(p->tokens, (size_t)c * sizeof *t);
    if (!t) return qlm_fail(err, QLM_ENOMEM, "perplexity: out of memory for %lld tokens", (long long)c);
    p->tokens = t;
    *cap = c;
  }
  if (n) memcpy(p->tokens + p->n_tokens, ids, (size_t)n * sizeof *ids);
  p->n_tokens += n;
  return QLM_OK;
}

static int tokenize_into(const qlm_tokenizer *tok, const char *s, size_t len, int add_special, qlm_ppl_plan *p,
                         int64_t *cap, qlm_error *err) {
  int32_t *ids = NULL;
  int n = 0;
  int rc = qlm_tokenize(tok, s, len, add_special, 0, &ids, &n, err);
  if (!rc) rc = append_tokens(p, ids, n, cap, err);
  free(ids);
  return rc;
}

/* ---- tokenizing a long text in pieces ----
 *
 * Where a piece may end (p: the first byte of the next piece), and why the ids do not change:
 *   byte-level BPE (SmolLM2; GPT-2-style regexes, each regex of the pre-tokenizer splitting the
 *     pieces of the previous one): at p with text[p-1] printable ASCII other than space and text[p]
 *     ' ' or '\n'.  BPE merges never cross a pre-token, so it suffices that the pre-tokens are the
 *     same.  No alternative of the regexes qlm uses (bpe.c) matches a non-space character followed
 *     by whitespace (' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+' and the contractions contain no
 *     \s after their first character; '\s+' only whitespace), so in the whole text a pre-token
 *     ends at p and matching restarts there.  The regexes have no look-behind, and their only
 *     look-ahead, (?!\S) after a whitespace run, never reaches p from the left piece (the run
 *     ends before p-1), so the left piece alone yields the same pre-tokens, and the right piece,
 *     matched from p, the same as the whole text from p.  Digits (\p{N}) has no look-around.
 *   SentencePiece-style BPE (stories260K, llama): at p with text[p] == '\n', when no token of more
 *     than one byte contains '\n' (checked: otherwise the text is not split).  Merges join
 *     adjacent symbols into vocabulary tokens, so the "\n" symbol is a wall no merge crosses;
 *     merges on either side are chosen by score, then position, among that side's pairs alone,
 *     so the left piece ends as in the whole text, and so does the right one, which starts with
 *     the wall.  The leading "▁" (add_space_prefix) belongs to the start of the text only: the
 *     pieces after the first are encoded by a tokenizer without it (and without BOS).
 * Pieces are cut at ASCII bytes, so each is valid UTF-8 exactly when the whole text is.  Texts of
 * vocabularies that add EOS are not split (the EOS belongs to the last piece only). */

static int is_graph(unsigned char c) { return c > 0x20 && c < 0x7f; }

/* Whether a piece may end before text[p] (0 < p < len), by the rule above. */
static int split_ok(int kind, const char *text, size_t p) {
  if (kind == QLM_TOK_SPM) return text[p] == '\n';
  return (text[p] == ' ' || text[p] == '\n') && is_graph((unsigned char)text[p - 1]);
}

/* Whether the vocabulary lets a text be split at single newlines (see above). */
static int splittable(const qlm_vocab *v) {
  if (v->add_eos) return 0;
  if (v->kind == QLM_TOK_BPE) return 1;
  if (v->kind != QLM_TOK_SPM) return 0;
  for (int i = 0; i < v->n_tokens; i++)
    if (v->token_len[i] > 1 && memchr(v->tokens[i], '\n', (size_t)v->token_len[i])) return 0;
  return 1;
}

int qlm_ppl_tokenize_pieces(const qlm_tokenizer *tok, const char *text, size_t len, int add_special, size_t piece_bytes,
                            qlm_ppl_ids_fn emit, void *ctx, qlm_error *err) {
  const qlm_vocab *v = qlm_tokenizer_vocab(tok);
  qlm_vocab rest_v = *v; /* shallow copy for the pieces after the first: no space prefix, no BOS */
  rest_v.add_space_prefix = false;
  rest_v.add_bos = false;
  qlm_tokenizer *rest = NULL;
  int split = piece_bytes > 0 && splittable(v);
  int rc = split ? qlm_tokenizer_new(&rest_v, &rest, err) : QLM_OK;
  for (size_t b = 0; !rc && (b < len || b == 0);) {
    size_t e = len;
    if (split && len - b > piece_bytes) { /* the first split point at or after b + piece_bytes */
      e = 0;
      for (size_t p = b + piece_bytes; !e && p < len; p++)
        if (split_ok(v->kind, text, p)) e = p;
      if (!e) e = len;
    }
    int32_t *ids = NULL;
    int n = 0;
    rc = qlm_tokenize(b == 0 ? tok : rest, text + b, e - b, b == 0 ? add_special : 0, 0, &ids, &n, err);
    if (!rc) rc = emit(ctx, ids, n, err);
    free(ids);
    if (e == len) break;
    b = e;
  }
  qlm_tokenizer_free(rest);
  return rc;
}

/* A dataset row: one line with its "\n"; whitespace-only lines are "" (HF's wikitext loader). */
typedef struct row { const char *s; size_t len; } row;

/* Bytes of the whitespace character at s[0..n) as Python's str.isspace() sees it (what strip()
 * removes and re's \s matches in a str pattern), or 0: ASCII \t\n\v\f\r, \x1c-\x1f and space, and
 * U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029, U+202F, U+205F, U+3000 in UTF-8. */
static size_t py_space(const char *s, size_t n) {
  const unsigned char *u = (const unsigned char *)s;
  if (!n) return 0;
  if (u[0] == ' ' || (u[0] >= '\t' && u[0] <= '\r') || (u[0] >= 0x1c && u[0] <= 0x1f)) return 1;
  if (n >= 2 && u[0] == 0xc2 && (u[1] == 0x85 || u[1] == 0xa0)) return 2;
  if (n < 3) return 0;
  if (u[0] == 0xe1 && u[1] == 0x9a && u[2] == 0x80) return 3;
  if (u[0] == 0xe2 && u[1] == 0x80 && ((u[2] >= 0x80 && u[2] <= 0x8a) || u[2] == 0xa8 || u[2] == 0xa9 || u[2] == 0xaf))
    return 3;
  if (u[0] == 0xe2 && u[1] == 0x81 && u[2] == 0x9f) return 3;
  if (u[0] == 0xe3 && u[1] == 0x80 && u[2] == 0x80) return 3;
  return 0;
}

/* s.strip() == "" */
static int is_blank(const char *s, size_t n) {
  for (size_t i = 0, k; i < n; i += k)
    if (!(k = py_space(s + i, n - i))) return 0;
  return 1;
}

static int split_rows(const char *text, size_t len, row **out, size_t *n_out, qlm_error *err) {
  size_t n = 0, cap = 0;
  row *r = NULL;
  for (size_t i = 0; i < len;) {
    const char *nl = memchr(text + i, '\n', len - i);
    size_t e = nl ? (size_t)(nl - text) + 1 : len;
    if (n == cap) {
      cap = cap ? cap * 2 : 1024;
      row *nr = realloc(r, cap * sizeof *nr);
      if (!nr) {
        free(r);
        return qlm_fail(err, QLM_ENOMEM, "perplexity: out of memory splitting rows");
      }
      r = nr;
    }
    r[n].s = text + i;
    r[n].len = is_blank(text + i, e - i) ? 0 : e - i;
    n++;
    i = e;
  }
  *out = r;
  *n_out = n;
  return QLM_OK;
}

/* "\n\n".join(rows) */
static char *join_rows(const row *r, size_t n, size_t *len_out, qlm_error *err) {
  size_t total = 0;
  for (size_t i = 0; i < n; i++) total += r[i].len + 2;
  char *s = qlm_malloc(total + 1, "joined text", err), *q = s;
  if (!s) return NULL;
  for (size_t i = 0; i < n; i++) {
    if (i) *q++ = '\n', *q++ = '\n';
    memcpy(q, r[i].s, r[i].len);
    q += r[i].len;
  }
  *q = 0;
  *len_out = (size_t)(q - s);
  return s;
}

/* In-place str.replace(from, to) for a shorter `to` (left to right, non-overlapping, as Python). */
static size_t replace_shorter(char *s, size_t n, const char *from, const char *to) {
  size_t fl = strlen(from), tl = strlen(to), o = 0;
  for (size_t i = 0; i < n;) {
    if (n - i >= fl && memcmp(s + i, from, fl) == 0) {
      memcpy(s + o, to, tl);
      o += tl;
      i += fl;
    } else {
      s[o++] = s[i++];
    }
  }
  return o;
}

/* EleutherAI/wikitext_document_level (the dataset of lm-eval's wikitext task) starts a new article
 * at a line whose line.replace("= = =", "===").replace("= =", "==").strip() begins with "= " and
 * ends with " =": a top-level heading " = Title = " (" = = Section = = " becomes "== Section =="). */
static int is_article_title(const char *line, size_t n, char *buf) {
  if (!memchr(line, '=', n)) return 0;
  memcpy(buf, line, n);
  n = replace_shorter(buf, n, "= = =", "===");
  n = replace_shorter(buf, n, "= =", "==");
  size_t b = 0, e = n, k;
  while (b < e && (k = py_space(buf + b, e - b))) b += k;
  while (e > b) { /* strip trailing whitespace: step back over one UTF-8 character */
    size_t c = e - 1;
    while (c > b && ((unsigned char)buf[c] & 0xc0) == 0x80) c--;
    if (py_space(buf + c, e - c) != e - c) break;
    e = c;
  }
  return e - b >= 2 && memcmp(buf + b, "= ", 2) == 0 && memcmp(buf + e - 2, " =", 2) == 0;
}

/* len(re.split(r"\s+", page)) in Python: whitespace runs + 1 */
static double count_words(const char *s, size_t n) {
  double w = 1;
  for (size_t i = 0, k; i < n;) {
    if ((k = py_space(s + i, n - i))) {
      w++;
      while (i < n && (k = py_space(s + i, n - i))) i += k;
    } else {
      i++;
    }
  }
  return w;
}

/* One lm-eval article: detokenize, tokenize as lm-eval 0.4.x's HFLM.tok_encode does (the
 * tokenizer's default special tokens: BOS where the vocab adds it), rolling windows; words and
 * bytes counted on the original page. */
static int add_lm_eval_page(const qlm_tokenizer *tok, const char *page, size_t plen, int max_len, int32_t prefix,
                            qlm_ppl_plan *p, int64_t *cap, qlm_error *err) {
  char *detok = NULL;
  int rc = qlm_wikitext_detokenize(page, plen, &detok, err);
  if (rc) return rc;
  int64_t b = p->n_tokens;
  rc = tokenize_into(tok, detok, strlen(detok), 1, p, cap, err);
  free(detok);
  if (!rc) rc = qlm_ppl_add_rolling_windows(p, b, p->n_tokens, max_len, prefix, err);
  p->n_words += count_words(page, plen);
  p->n_bytes += (double)plen;
  p->n_docs++;
  return rc;
}

/* Pages are "\n".join of their lines: a page ends before the "\n" that precedes the next title;
 * the last runs to the end of the text.  A page before the first title is kept only if it is not
 * blank (wiki.test.raw starts with " \n", which is dropped); the last page is always kept. */
static int plan_lm_eval(const qlm_tokenizer *tok, const char *text, size_t len, int max_len, qlm_ppl_plan *p,
                        int64_t *cap, qlm_error *err) {
  const qlm_vocab *v = qlm_tokenizer_vocab(tok);
  int32_t prefix = v->bos_id >= 0 ? v->bos_id : v->eos_id;
  if (memchr(text, 0, len)) return qlm_fail(err, QLM_EFORMAT, "lm-eval: the text contains a NUL byte");
  size_t longest = 0;
  for (size_t i = 0; i <= len;) {
    const char *nl = memchr(text + i, '\n', len - i);
    size_t e = nl ? (size_t)(nl - text) : len;
    if (e - i > longest) longest = e - i;
    i = e + 1;
  }
  char *buf = qlm_malloc(longest + 1, "line buffer", err);
  if (!buf) return QLM_ENOMEM;
  int rc = QLM_OK;
  size_t page = 0; /* start of the current page */
  for (size_t i = 0; !rc && i <= len;) {
    const char *nl = memchr(text + i, '\n', len - i);
    size_t e = nl ? (size_t)(nl - text) : len;
    if (i > page && is_article_title(text + i, e - i, buf)) {
      size_t plen = i - 1 - page; /* without the "\n" that joined it to the title */
      if (!is_blank(text + page, plen)) rc = add_lm_eval_page(tok, text + page, plen, max_len, prefix, p, cap, err);
      page = i;
    }
    i = e + 1;
  }
  if (!rc) rc = add_lm_eval_page(tok, text + page, len - page, max_len, prefix, p, cap, err);
  free(buf);
  return rc;
}

int qlm_ppl_window_for(int protocol, const qlm_ppl_params *prm, int model_ctx) {
  int ctx = model_ctx > 0 ? model_ctx : 1 << 20;
  int def_window = protocol == QLM_PPL_LLAMACPP ? 512 : protocol == QLM_PPL_LM_EVAL ? ctx : 1024;
  if (def_window > ctx) def_window = ctx;
  return prm && prm->window ? prm->window : def_window;
}

int qlm_ppl_plan_text(const qlm_tokenizer *tok, const char *text, size_t len, int protocol,
                      const qlm_ppl_params *prm, int model_ctx, qlm_ppl_plan *p, qlm_error *err) {
  memset(p, 0, sizeof *p);
  p->protocol = protocol;
  int ctx = model_ctx > 0 ? model_ctx : 1 << 20;
  int window = qlm_ppl_window_for(protocol, prm, model_ctx);
  int stride = prm && prm->stride ? prm->stride : window / 2;
  if (window > ctx)
    return qlm_fail(err, QLM_EUSAGE, "perplexity: window %d is longer than the model's context (%d positions)", window, ctx);
  if (window < 2) return qlm_fail(err, QLM_EUSAGE, "perplexity: window %d is too short (at least 2)", window);
  if (protocol != QLM_PPL_HF_WINDOW && protocol != QLM_PPL_PER_LINE && prm && prm->stride)
    return qlm_fail(err, QLM_EUSAGE, "perplexity: --stride applies to hf-window and per-line only");
  p->window = window;
  p->stride = protocol == QLM_PPL_HF_WINDOW || protocol == QLM_PPL_PER_LINE ? stride : 0;
  int64_t cap = 0;
  const qlm_vocab *v = qlm_tokenizer_vocab(tok);
  int rc = QLM_OK;
  row *rows = NULL;
  size_t n_rows = 0;
  switch (protocol) {
  case QLM_PPL_HF_WINDOW: {
    if ((rc = split_rows(text, len, &rows, &n_rows, err))) break;
    size_t jlen;
    char *joined = join_rows(rows, n_rows, &jlen, err);
    if (!joined) {
      rc = QLM_ENOMEM;
      break;
    }
    rc = tokenize_into(tok, joined, jlen, 1, p, &cap, err);
    free(joined);
    if (!rc) rc = qlm_ppl_add_hf_windows(p, 0, p->n_tokens, window, stride, err);
    p->n_docs = 1;
    break;
  }
  case QLM_PPL_PER_LINE:
    if ((rc = split_rows(text, len, &rows, &n_rows, err))) break;
    for (size_t i = 0; !rc && i < n_rows; i++) {
      if (!rows[i].len) continue;
      int64_t b = p->n_tokens;
      rc = tokenize_into(tok, rows[i].s, rows[i].len, 1, p, &cap, err);
      if (!rc) rc = qlm_ppl_add_hf_windows(p, b, p->n_tokens, window, stride, err);
      p->n_docs++;
    }
    break;
  case QLM_PPL_LLAMACPP: {
    int add_bos = v->add_bos && v->bos_id >= 0;
    if (!(rc = tokenize_into(tok, text, len, 1, p, &cap, err)))
      rc = qlm_ppl_add_llamacpp_chunks(p, window, add_bos ? v->bos_id : -1, err);
    p->n_docs = 1;
    break;
  }
  case QLM_PPL_LM_EVAL:
    rc = plan_lm_eval(tok, text, len, window, p, &cap, err);
    break;
  default:
    rc = qlm_fail(err, QLM_EUSAGE, "perplexity: unknown protocol %d", protocol);
  }
  free(rows);
  if (!rc && p->n_win == 0) rc = qlm_fail(err, QLM_EUSAGE, "perplexity: the text gives no token to score");
  if (rc) qlm_ppl_plan_free(p);
  return rc;
}

/* ---- lm-eval's wikitext detokenizer ---- */

static int sub_literal(char **s, const char *from, const char *to, qlm_error *err) {
  size_t fl = strlen(from), tl = strlen(to), n = 0;
  for (const char *q = *s; (q = strstr(q, from)); q += fl) n++;
  if (!n) return QLM_OK;
  size_t len = strlen(*s), out_len = len - n * fl + n * tl; /* tl <= fl + small: no overflow for sane inputs */
  char *o = qlm_malloc(out_len + 1, "detokenized text", err), *w = o;
  if (!o) return QLM_ENOMEM;
  const char *q = *s, *hit;
  while ((hit = strstr(q, from))) {
    memcpy(w, q, (size_t)(hit - q));
    w += hit - q;
    memcpy(w, to, tl);
    w += tl;
    q = hit + fl;
  }
  strcpy(w, q);
  free(*s);
  *s = o;
  return QLM_OK;
}

/* re.sub(pattern, repl, s) with Python's \1 written as PCRE2's $1. */
static int sub_regex(char **s, const char *pattern, const char *repl, qlm_error *err) {
  int ec;
  PCRE2_SIZE eo;
  pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
  if (!re) return qlm_fail(err, QLM_EINTERNAL, "detokenizer: pattern '%s' does not compile", pattern);
  pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
  size_t len = strlen(*s);
  PCRE2_SIZE out_len = len * 2 + 64;
  int rc = QLM_OK;
  for (;;) {
    char *o = malloc(out_len);
    if (!o || !md) {
      free(o);
      rc = qlm_fail(err, QLM_ENOMEM, "detokenizer: out of memory");
      break;
    }
    PCRE2_SIZE ol = out_len;
    int r = pcre2_substitute(re, (PCRE2_SPTR)*s, len, 0, PCRE2_SUBSTITUTE_GLOBAL | PCRE2_SUBSTITUTE_OVERFLOW_LENGTH, md,
                             NULL, (PCRE2_SPTR)repl, PCRE2_ZERO_TERMINATED, (PCRE2_UCHAR *)o, &ol);
    if (r == PCRE2_ERROR_NOMEMORY) {
      free(o);
      out_len = ol + 1;
      continue;
    }
    if (r < 0) {
      free(o);
      rc = qlm_fail(err, QLM_EFORMAT, "detokenizer: substitution of '%s' failed (PCRE2 error %d)", pattern, r);
      break;
    }
    free(*s);
    *s = o;
    break;
  }
  pcre2_match_data_free(md);
  pcre2_code_free(re);
  return rc;
}

int qlm_wikitext_detokenize(const char *page, size_t len, char **out, qlm_error *err) {
  if (memchr(page, 0, len)) return qlm_fail(err, QLM_EFORMAT, "wikitext: the text contains a NUL byte");
  char *s = qlm_malloc(len + 1, "detokenized text", err);
  if (!s) return QLM_ENOMEM;
  memcpy(s, page, len);
  s[len] = 0;
  static const char *const lit1[][2] = {
      {"s '", "s'"},
  };
  static const char *const lit2[][2] = {
      {" @-@ ", "-"}, {" @,@ ", ","}, {" @.@ ", "."}, {" : ", ": "}, {" ; ", "; "},
      {" . ", ". "},  {" ! ", "! "},  {" ? ", "? "},  {" , ", ", "},
  };
  static const char *const rx[][2] = {
      {"\\(\\s*([^\\)]*?)\\s*\\)", "($1)"}, {"\\[\\s*([^\\]]*?)\\s*\\]", "[$1]"}, {"{\\s*([^}]*?)\\s*}", "{$1}"},
      {"\"\\s*([^\"]*?)\\s*\"", "\"$1\""},  {"'\\s*([^']*?)\\s*'", "'$1'"},
  };
  static const char *const lit3[][2] = {
      {"= = = =", "===="}, {"= = =", "==="}, {"= =", "=="}, {" \xc2\xb0 ", "\xc2\xb0"},
      {" \n", "\n"},       {"\n ", "\n"},    {" N ", " 1 "}, {" 's", "'s"},
  };
  int rc = QLM_OK;
  for (size_t i = 0; !rc && i < sizeof lit1 / sizeof lit1[0]; i++) rc = sub_literal(&s, lit1[i][0], lit1[i][1], err);
  /* re.sub(r"/' [0-9]/", r"/'[0-9]/", s): a literal replacement in lm-eval */
  if (!rc) rc = sub_regex(&s, "/' [0-9]/", "/'[0-9]/", err);
  for (size_t i = 0; !rc && i < sizeof lit2 / sizeof lit2[0]; i++) rc = sub_literal(&s, lit2[i][0], lit2[i][1], err);
  for (size_t i = 0; !rc && i < sizeof rx / sizeof rx[0]; i++) rc = sub_regex(&s, rx[i][0], rx[i][1], err);
  for (size_t i = 0; !rc && i < sizeof lit3 / sizeof lit3[0]; i++) rc = sub_literal(&s, lit3[i][0], lit3[i][1], err);
  if (rc) {
    free(s);
    return rc;
  }
  *out = s;
  return QLM_OK;
}

/* ---- the scorer ---- */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void qlm_ppl_finish(qlm_ppl_stats *st) {
  if (st->n_scored <= 0) {
    st->ppl = st->ppl_err = NAN;
    return;
  }
  double n = (double)st->n_scored, mean = st->nll_sum / n, var = st->nll2_sum / n - mean * mean;
  st->ppl = exp(mean);
  st->ppl_err = st->n_scored > 1 && var > 0 ? st->ppl * sqrt(var / (n - 1)) : 0;
}

/* Rows of one forward call and what each predicts. */
typedef struct fwd_rows {
  int n;
  int32_t *token, *pos, *seq; /* [ubatch] */
  int8_t *want;               /* [ubatch] */
  int64_t *target;            /* [ubatch] index of the token predicted (wanted rows) */
  int32_t *target_tok;        /* [ubatch] that token (the window's tokens may be gone by the flush) */
} fwd_rows;

static int flush_rows(const qlm_model *m, qlm_state *s, const qlm_ppl_opts *o, fwd_rows *r, float *logits,
                      qlm_ppl_stats *st, qlm_error *err) {
  if (!r->n) return QLM_OK;
  qlm_batch b = {.n = r->n, .token = r->token, .pos = r->pos, .seq = r->seq, .want_logits = r->want};
  int rc = qlm_forward(m, s, &b, logits, err);
  int V = m->hp.n_vocab;
  st->n_fed += r->n;
  for (int i = 0; !rc && i < r->n; i++) {
    if (!r->want[i]) continue;
    const float *l = logits + (size_t)i * (size_t)V;
    /* a NaN/Inf logit names its position and output instead of a silent NaN perplexity */
    if (!qlm_allow_nonfinite() && (rc = qlm_check_logits(l, V, r->target[i], "perplexity", err))) break;
    float mx = l[0];
    for (int k = 1; k < V; k++) mx = l[k] > mx ? l[k] : mx;
    double sum = 0;
    for (int k = 0; k < V; k++) sum += exp((double)l[k] - (double)mx);
    double lse = (double)mx + log(sum);
    int32_t t = r->target_tok[i];
    double nll = lse - (double)l[t];
    if (!isfinite(nll)) { /* only with --allow-nonfinite: skip the token and count it */
      st->n_nonfinite++;
      continue;
    }
    st->nll_sum += nll;
    st->nll2_sum += nll * nll;
    st->n_scored++;
    if (o->on_token) rc = o->on_token(o->ctx, r->target[i], t, l, lse, err);
  }
  r->n = 0;
  return rc;
}

/* Where the scorer gets its windows: a whole plan or a stream.  fetch hands out up to `want` next
 * windows (*got 0: none left); tokens(begin) points at the token array from index `begin`, valid
 * through the end of every window handed out and not yet released by done(). */
typedef struct win_feed {
  void *ctx;
  int (*fetch)(void *ctx, qlm_ppl_window *out, int want, int *got, qlm_error *err);
  const int32_t *(*tokens)(void *ctx, int64_t begin);
  void (*done)(void *ctx);
  int64_t (*total)(void *ctx); /* windows that will be run in all, -1 while unknown */
} win_feed;

/* Append the rows of window x (sequence seq) to r, flushing every ubatch rows. */
static int feed_window(const qlm_model *m, qlm_state *s, const qlm_ppl_opts *o, const qlm_ppl_window *x,
                       const int32_t *tk, int seq, int ub, fwd_rows *r, float *logits, qlm_ppl_stats *st,
                       qlm_error *err) {
  int has_prefix = x->prefix >= 0, rc = QLM_OK;
  int64_t rows = has_prefix + (x->end - 1 - x->begin);
  qlm_state_clear(s, seq);
  for (int64_t k = 0; !rc && k < rows; k++) {
    int32_t tok = has_prefix && k == 0 ? x->prefix : tk[k - has_prefix];
    if (k == 0 && x->replace_first >= 0) tok = x->replace_first;
    int64_t tgt = x->begin + k + !has_prefix;
    r->token[r->n] = tok;
    r->pos[r->n] = (int32_t)k;
    r->seq[r->n] = seq;
    r->want[r->n] = tgt >= x->score_from && tgt < x->end;
    r->target[r->n] = tgt;
    r->target_tok[r->n] = tk[tgt - x->begin];
    if (++r->n == ub) rc = flush_rows(m, s, o, r, logits, st, err);
  }
  return rc;
}

/* The batched scorer: batches of `batch` windows (one sequence each), rows packed into forward
 * calls of up to ubatch rows.  Windows, batches and packing are exactly those of the plan order,
 * so a plan and a stream of the same windows give the same bits. */
static int score_feed(const qlm_model *m, const win_feed *f, int max_rows, const qlm_ppl_opts *o, qlm_ppl_stats *st,
                      qlm_error *err) {
  memset(st, 0, sizeof *st);
  int batch = o->batch > 0 ? o->batch : 4, ub = o->ubatch > 0 ? o->ubatch : 512;
  qlm_state *s = NULL;
  size_t V = (size_t)m->hp.n_vocab, nl;
  if (qlm_mul_overflow(V, (size_t)ub, &nl) || qlm_mul_overflow(nl, sizeof(float), &nl))
    return qlm_fail(err, QLM_ELIMIT, "perplexity: logits buffer of %d rows x %zu is too large", ub, V);
  fwd_rows r = {0};
  float *logits = qlm_malloc(nl, "logits", err);
  qlm_ppl_window *wins = qlm_malloc((size_t)batch * sizeof *wins, "windows", err);
  r.token = qlm_malloc((size_t)ub * sizeof *r.token, "batch", err);
  r.pos = qlm_malloc((size_t)ub * sizeof *r.pos, "batch", err);
  r.seq = qlm_malloc((size_t)ub * sizeof *r.seq, "batch", err);
  r.want = qlm_malloc((size_t)ub, "batch", err);
  r.target = qlm_malloc((size_t)ub * sizeof *r.target, "batch", err);
  r.target_tok = qlm_malloc((size_t)ub * sizeof *r.target_tok, "batch", err);
  int got = 0, rc = !logits || !wins || !r.token || !r.pos || !r.seq || !r.want || !r.target || !r.target_tok ? QLM_ENOMEM : QLM_OK;
  /* fewer windows than a batch in all: the batch is all of them (the state holds no more) */
  if (!rc) rc = f->fetch(f->ctx, wins, batch, &got, err);
  if (!rc && got < batch) batch = got > 0 ? got : 1;
  if (!rc) rc = qlm_state_new(m, batch, max_rows > 0 ? max_rows : 1, ub, o->n_threads > 0 ? o->n_threads : 1, &s, err);
  double t0 = now_s();
  while (!rc && got > 0) {
    for (int w = 0; !rc && w < got; w++) rc = feed_window(m, s, o, &wins[w], f->tokens(f->ctx, wins[w].begin), w, ub, &r, logits, st, err);
    if (!rc) rc = flush_rows(m, s, o, &r, logits, st, err);
    if (rc) break;
    st->n_windows += got;
    f->done(f->ctx);
    if (o->progress) o->progress(o->ctx, st->n_windows, f->total(f->ctx), now_s() - t0);
    rc = f->fetch(f->ctx, wins, batch, &got, err);
  }
  st->seconds = now_s() - t0;
  qlm_ppl_finish(st);
  qlm_state_free(s);
  free(logits);
  free(wins);
  free(r.token);
  free(r.pos);
  free(r.seq);
  free(r.want);
  free(r.target);
  free(r.target_tok);
  return rc;
}

/* A whole plan as a feed: its first n_win windows in order. */
typedef struct plan_feed { const qlm_ppl_plan *p; int64_t next, n_win; } plan_feed;

static int plan_fetch(void *ctx, qlm_ppl_window *out, int want, int *got, qlm_error *err) {
  (void)err;
  plan_feed *pf = ctx;
  int n = 0;
  while (n < want && pf->next < pf->n_win) out[n++] = pf->p->win[pf->next++];
  *got = n;
  return QLM_OK;
}
static const int32_t *plan_tokens(void *ctx, int64_t begin) { return ((plan_feed *)ctx)->p->tokens + begin; }
static void plan_done(void *ctx) { (void)ctx; }
static int64_t plan_total(void *ctx) { return ((plan_feed *)ctx)->n_win; }

int qlm_ppl_run(const qlm_model *m, const qlm_ppl_plan *p, const qlm_ppl_opts *o, qlm_ppl_stats *st, qlm_error *err) {
  memset(st, 0, sizeof *st);
  int64_t n_win = o->max_windows > 0 && o->max_windows < p->n_win ? o->max_windows : p->n_win;
  for (int64_t w = 0; w < n_win; w++) {
    const qlm_ppl_window *x = &p->win[w];
    if (x->begin < 0 || x->end > p->n_tokens || x->score_from < x->begin || x->begin >= x->end)
      return qlm_fail(err, QLM_EINTERNAL, "perplexity: window %lld is out of the token array", (long long)w);
  }
  plan_feed pf = {.p = p, .n_win = n_win};
  win_feed f = {.ctx = &pf, .fetch = plan_fetch, .tokens = plan_tokens, .done = plan_done, .total = plan_total};
  return score_feed(m, &f, p->max_rows, o, st, err);
}

/* ---- streaming: windows made from the text as they are scored ----
 *
 * The text is consumed in units — a piece of the joined rows (hf-window) or of the raw text
 * (llamacpp), cut only where qlm_ppl_tokenize_pieces may cut; one row (per-line); one article
 * (lm-eval) — and each unit's ids are appended to a sliding token buffer, from which the protocol
 * makes every window it can already make, in plan order.  Tokens before the first window still
 * needed (and before the next window the protocol will start) are dropped. */

enum {
  STREAM_PIECE_BYTES = 1 << 16,     /* bytes of text per tokenizer call (hf-window, llamacpp) */
  STREAM_LOOKAHEAD_TOKENS = 1 << 20 /* tokens read ahead to find max_rows before counting the rest */
};

size_t qlm_ppl_test_piece_bytes;
int64_t qlm_ppl_test_lookahead_tokens;

static size_t piece_bytes(void) { return qlm_ppl_test_piece_bytes ? qlm_ppl_test_piece_bytes : STREAM_PIECE_BYTES; }
static int64_t lookahead_tokens(void) {
  return qlm_ppl_test_lookahead_tokens ? qlm_ppl_test_lookahead_tokens : STREAM_LOOKAHEAD_TOKENS;
}

struct qlm_ppl_stream {
  const qlm_tokenizer *tok;
  qlm_tokenizer *rest; /* pieces after the first: no space prefix, no BOS (qlm_ppl_tokenize_pieces) */
  qlm_vocab rest_v;    /* its vocabulary (a tokenizer refers to its vocabulary: it lives here) */
  const char *text, *name;
  size_t len;
  int protocol, window, stride, split, cap_rows;
  int32_t replace_first, prefix; /* llamacpp's BOS (or -1); lm-eval's prefix token */
  int64_t max_windows;           /* windows handed out at most (0 = all) */
  /* the text */
  size_t pos;        /* bytes consumed: the next row / piece / line to look at */
  size_t page;       /* lm-eval: start of the current article */
  int64_t n_rows;    /* hf-window: rows joined so far */
  int eof;           /* the whole text tokenized and every window made */
  char *line;        /* lm-eval: title check scratch [line_cap] */
  size_t line_cap;
  char *pbuf;        /* hf-window, llamacpp: text waiting for the tokenizer [pcap] */
  size_t pn, pcap, pscan; /* bytes in pbuf; split points before pscan were looked for already */
  int first_done;    /* the first piece (with BOS / space prefix) was tokenized */
  /* tokens [tok_base, tok_base + tok_n) */
  int32_t *toks;
  int64_t tok_base, tok_n, tok_cap;
  /* window makers */
  int64_t doc_begin, hf_b, hf_prev_end; /* hf windows over the current document */
  int hf_done;
  int64_t chunk;     /* llamacpp: next chunk */
  /* windows made: q[q_head .. q_head + q_n), of which the first q_out are handed out */
  qlm_ppl_window *q;
  int64_t q_head, q_n, q_cap, q_out;
  int64_t n_made, n_given;
  int max_rows, max_rows_known;
  int64_t n_docs;
  double n_words, n_bytes;
};

static int64_t st_end(const qlm_ppl_stream *s) { return s->tok_base + s->tok_n; }

/* Prefix errors of the text with its name, as the whole-text path's caller did. */
static int stream_fail(const qlm_ppl_stream *s, int rc, qlm_error *err) {
  return rc && s->name ? qlm_fail_prefix(err, "%s", s->name) : rc;
}

static int push_tokens(qlm_ppl_stream *s, const int32_t *ids, int n, qlm_error *err) {
  if (s->tok_n + n > s->tok_cap) {
    int64_t c = s->tok_cap ? s->tok_cap : 4096;
    while (c < s->tok_n + n) c *= 2;
    int32_t *t = realloc(s->toks, (size_t)c * sizeof *t);
    if (!t) return qlm_fail(err, QLM_ENOMEM, "perplexity: out of memory for %lld buffered tokens", (long long)c);
    s->toks = t;
    s->tok_cap = c;
  }
  if (n) memcpy(s->toks + s->tok_n, ids, (size_t)n * sizeof *ids);
  s->tok_n += n;
  return QLM_OK;
}

static int tokenize_push(qlm_ppl_stream *s, const qlm_tokenizer *tok, const char *t, size_t n, int add_special,
                         qlm_error *err) {
  int32_t *ids = NULL;
  int k = 0;
  int rc = qlm_tokenize(tok, t, n, add_special, 0, &ids, &k, err);
  if (!rc) rc = push_tokens(s, ids, k, err);
  free(ids);
  return rc;
}

/* A window made: checked as add_window checks it, queued (rows counted for max_rows). */
static int push_window(void *ctx, qlm_ppl_window w, qlm_error *err) {
  qlm_ppl_stream *s = ctx;
  if (w.begin < s->tok_base || w.end > st_end(s) || w.begin >= w.end || w.score_from < w.begin ||
      w.score_from > w.end || (w.prefix < 0 && w.score_from == w.begin))
    return qlm_fail(err, QLM_EINTERNAL, "perplexity: bad window [%lld, %lld) scoring from %lld", (long long)w.begin,
                    (long long)w.end, (long long)w.score_from);
  if (s->q_head + s->q_n == s->q_cap) {
    if (s->q_head) { /* slide the live windows to the front */
      memmove(s->q, s->q + s->q_head, (size_t)s->q_n * sizeof *s->q);
      s->q_head = 0;
    }
    if (s->q_n == s->q_cap) {
      int64_t cap = s->q_cap ? s->q_cap * 2 : 64;
      qlm_ppl_window *nq = realloc(s->q, (size_t)cap * sizeof *nq);
      if (!nq) return qlm_fail(err, QLM_ENOMEM, "perplexity: out of memory for %lld queued windows", (long long)cap);
      s->q = nq;
      s->q_cap = cap;
    }
  }
  s->q[s->q_head + s->q_n++] = w;
  s->n_made++;
  int64_t rows = (w.prefix >= 0) + (w.end - 1 - w.begin);
  if (rows > s->max_rows) s->max_rows = (int)rows;
  if (s->max_rows >= s->cap_rows) s->max_rows_known = 1; /* no window can have more rows */
  return QLM_OK;
}

/* lm-eval's rolling windows (qlm_ppl_add_rolling_windows) into any sink. */
static int rolling_windows(int (*add)(void *, qlm_ppl_window, qlm_error *), void *sink, int64_t begin, int64_t end,
                           int max_len, int32_t prefix, qlm_error *err) {
  int64_t n = end - begin;
  if (n <= 0) return QLM_OK;
  int64_t first = n < max_len ? n : max_len;
  int rc = add(sink, (qlm_ppl_window){.begin = begin, .end = begin + first, .score_from = begin, .prefix = prefix,
                                      .replace_first = -1}, err);
  for (int64_t done = first; !rc && done < n;) {
    int64_t pred = n - done < max_len ? n - done : max_len;
    int64_t wend = begin + done + pred;
    rc = add(sink, (qlm_ppl_window){.begin = wend - max_len - 1, .end = wend, .score_from = wend - pred, .prefix = -1,
                                    .replace_first = -1}, err);
    done += pred;
  }
  return rc;
}

/* hf windows (qlm_ppl_add_hf_windows) over the document [doc_begin, ...) made as its tokens arrive:
 * the window at hf_b is made once its max_length tokens are there, or when the document is
 * complete (final).  Same windows as the whole-document loop: a window there ends the loop when it
 * reaches the document's end; here the next one then scores nothing and ends it. */
static int hf_step(qlm_ppl_stream *s, int final, qlm_error *err) {
  while (!s->hf_done) {
    int64_t have = st_end(s);
    if (!final && s->hf_b + s->window > have) return QLM_OK; /* wait for more tokens */
    if (final && (have - s->doc_begin < 2 || s->hf_b >= have)) break;
    int64_t e = s->hf_b + s->window < have ? s->hf_b + s->window : have;
    int64_t from = s->hf_prev_end > s->hf_b + 1 ? s->hf_prev_end : s->hf_b + 1;
    if (from < e) {
      int rc = push_window(s, (qlm_ppl_window){.begin = s->hf_b, .end = e, .score_from = from, .prefix = -1, .replace_first = -1}, err);
      if (rc) return rc;
    }
    s->hf_prev_end = e;
    if (final && e == have) break;
    s->hf_b += s->stride;
  }
  s->hf_done = 1;
  return QLM_OK;
}

static void hf_doc_start(qlm_ppl_stream *s) {
  s->doc_begin = s->hf_b = s->hf_prev_end = st_end(s);
  s->hf_done = 0;
}

/* llama.cpp chunks made as tokens arrive; none before 2 * n_ctx tokens are known to exist (the
 * whole-text path refuses shorter texts). */
static int llama_step(qlm_ppl_stream *s, int final, qlm_error *err) {
  int64_t have = st_end(s), n_ctx = s->window;
  if (final && have < 2 * n_ctx)
    return qlm_fail(err, QLM_EUSAGE, "llamacpp: the text has %lld tokens; at least 2*n_ctx = %lld are needed (as llama.cpp requires)",
                    (long long)have, (long long)(2 * n_ctx));
  while (have >= 2 * n_ctx && (s->chunk + 1) * n_ctx <= have) {
    int64_t b = s->chunk * n_ctx;
    int rc = push_window(s, (qlm_ppl_window){.begin = b, .end = b + n_ctx, .score_from = b + n_ctx / 2 + 1, .prefix = -1,
                                             .replace_first = s->replace_first}, err);
    if (rc) return rc;
    s->chunk++;
  }
  return QLM_OK;
}

/* Windows the protocol can make from the tokens so far (final: the text is all tokenized). */
static int make_windows(qlm_ppl_stream *s, int final, qlm_error *err) {
  return s->protocol == QLM_PPL_LLAMACPP ? llama_step(s, final, err) : hf_step(s, final, err);
}

/* Tokenize pbuf[0, n) as the next piece and drop it from pbuf. */
static int piece_tokenize(qlm_ppl_stream *s, size_t n, qlm_error *err) {
  int first = !s->first_done;
  int rc = tokenize_push(s, first ? s->tok : s->rest, s->pbuf, n, first, err);
  s->first_done = 1;
  memmove(s->pbuf, s->pbuf + n, s->pn - n);
  s->pn -= n;
  s->pscan = 0;
  return rc ? rc : make_windows(s, 0, err);
}

/* Append text to pbuf and tokenize every piece of at least STREAM_PIECE_BYTES that ends at a
 * split point (split_ok) now in the buffer. */
static int piece_feed(qlm_ppl_stream *s, const char *d, size_t n, qlm_error *err) {
  if (s->pn + n > s->pcap) {
    size_t c = s->pcap ? s->pcap : piece_bytes() * 2;
    while (c < s->pn + n) c *= 2;
    char *b = realloc(s->pbuf, c);
    if (!b) return qlm_fail(err, QLM_ENOMEM, "perplexity: out of memory for %zu bytes of text", c);
    s->pbuf = b;
    s->pcap = c;
  }
  if (n) memcpy(s->pbuf + s->pn, d, n);
  s->pn += n;
  int kind = qlm_tokenizer_vocab(s->tok)->kind, rc = QLM_OK;
  while (!rc && s->split && s->pn > piece_bytes()) {
    size_t p = s->pscan > piece_bytes() ? s->pscan : piece_bytes(), cut = 0;
    for (; !cut && p < s->pn; p++)
      if (split_ok(kind, s->pbuf, p)) cut = p;
    if (!cut) {
      s->pscan = s->pn;
      break;
    }
    rc = piece_tokenize(s, cut, err);
  }
  return rc;
}

/* The line at s->pos: [pos, e) without its "\n"; returns the position after it. */
static size_t line_end(const qlm_ppl_stream *s, size_t pos, size_t *e) {
  const char *nl = pos < s->len ? memchr(s->text + pos, '\n', s->len - pos) : NULL;
  *e = nl ? (size_t)(nl - s->text) : s->len;
  return *e + 1;
}

/* The next dataset row (line with its "\n"; blank ones as ""), or 0 at the end of the text. */
static int next_row(const qlm_ppl_stream *s, size_t *pos, const char **r, size_t *n) {
  if (*pos >= s->len) return 0;
  size_t e, next = line_end(s, *pos, &e);
  if (next > s->len) next = s->len;
  *r = s->text + *pos;
  *n = is_blank(*r, next - *pos) ? 0 : next - *pos;
  *pos = next;
  return 1;
}

static int title_at(qlm_ppl_stream *s, size_t b, size_t e, qlm_error *err) {
  if (e - b + 1 > s->line_cap) {
    char *l = realloc(s->line, e - b + 1);
    if (!l) return qlm_fail(err, QLM_ENOMEM, "perplexity: out of memory for a line of %zu bytes", e - b);
    s->line = l;
    s->line_cap = e - b + 1;
  }
  return is_article_title(s->text + b, e - b, s->line);
}

/* The next lm-eval article (plan_lm_eval's pages) from (*page, *pos): 1 and [*b, *b + *n) when
 * one is found (blank pages before a title are skipped), 0 at the end, < 0 on error. */
static int next_page(qlm_ppl_stream *s, size_t *page, size_t *pos, size_t *b, size_t *n, qlm_error *err) {
  while (*pos <= s->len && *page <= s->len) {
    size_t i = *pos, e;
    *pos = line_end(s, i, &e);
    int t = i > *page ? title_at(s, i, e, err) : 0;
    if (t < 0) return t;
    if (t) {
      size_t plen = i - 1 - *page, start = *page;
      *page = i;
      if (!is_blank(s->text + start, plen)) {
        *b = start, *n = plen;
        return 1;
      }
    }
  }
  if (*page > s->len) return 0;
  *b = *page, *n = s->len - *page; /* the last page is always kept */
  *page = s->len + 1;
  return 1;
}

/* Detokenized, tokenized ids of one article into s (plan_lm_eval's add_lm_eval_page). */
static int lm_eval_page_tokens(qlm_ppl_stream *s, const char *page, size_t plen, qlm_error *err) {
  char *detok = NULL;
  int rc = qlm_wikitext_detokenize(page, plen, &detok, err);
  if (!rc) rc = tokenize_push(s, s->tok, detok, strlen(detok), 1, err);
  free(detok);
  return rc;
}

/* Consume the next unit of text, making its windows; sets eof after the last. */
static int stream_step(qlm_ppl_stream *s, qlm_error *err) {
  const char *r;
  size_t n, b;
  int rc = QLM_OK;
  switch (s->protocol) {
  case QLM_PPL_HF_WINDOW: /* rows "\n\n"-joined, a piece's worth of rows at a time */
    for (size_t fed = 0; !rc && fed < piece_bytes() && next_row(s, &s->pos, &r, &n); fed += n + 2) {
      if (s->n_rows++) rc = piece_feed(s, "\n\n", 2, err);
      if (!rc) rc = piece_feed(s, r, n, err);
    }
    if (!rc && s->pos >= s->len) {
      if (s->pn || !s->first_done) rc = piece_tokenize(s, s->pn, err);
      if (!rc) rc = hf_step(s, 1, err);
      s->eof = 1;
    }
    break;
  case QLM_PPL_PER_LINE:
    if (!next_row(s, &s->pos, &r, &n)) {
      s->eof = 1;
      break;
    }
    if (!n) break;
    hf_doc_start(s);
    rc = tokenize_push(s, s->tok, r, n, 1, err);
    if (!rc) rc = hf_step(s, 1, err);
    s->n_docs++;
    break;
  case QLM_PPL_LLAMACPP: {
    size_t k = s->len - s->pos < piece_bytes() ? s->len - s->pos : piece_bytes();
    rc = piece_feed(s, s->text + s->pos, k, err);
    s->pos += k;
    if (!rc && s->pos >= s->len) {
      if (s->pn || !s->first_done) rc = piece_tokenize(s, s->pn, err);
      if (!rc) rc = llama_step(s, 1, err);
      s->eof = 1;
    }
    break;
  }
  case QLM_PPL_LM_EVAL: {
    int f = next_page(s, &s->page, &s->pos, &b, &n, err);
    if (f < 0) return f;
    if (!f) {
      s->eof = 1;
      break;
    }
    if (memchr(s->text + b, 0, n)) return qlm_fail(err, QLM_EFORMAT, "lm-eval: the text contains a NUL byte");
    int64_t begin = st_end(s);
    rc = lm_eval_page_tokens(s, s->text + b, n, err);
    if (!rc) rc = rolling_windows(push_window, s, begin, st_end(s), s->window, s->prefix, err);
    s->n_words += count_words(s->text + b, n);
    s->n_bytes += (double)n;
    s->n_docs++;
    if (s->page > s->len) s->eof = 1;
    break;
  }
  }
  return rc;
}

/* Rows of the largest window in the rest of the text (per-line rows, lm-eval articles), found
 * by tokenizing it without keeping ids or windows; nothing of s changes. */
static int count_rest_rows(qlm_ppl_stream *s, int *rows_out, qlm_error *err) {
  qlm_ppl_stream c = *s; /* a scanner over the same text from the same place */
  int rows = 0, rc = QLM_OK;
  const char *r;
  size_t n, b;
  c.toks = NULL, c.tok_n = c.tok_cap = 0;
  c.line = NULL, c.line_cap = 0;
  for (;;) {
    int f = s->protocol == QLM_PPL_PER_LINE ? next_row(&c, &c.pos, &r, &n) : next_page(&c, &c.page, &c.pos, &b, &n, err);
    if (f <= 0) {
      rc = f;
      break;
    }
    c.tok_n = 0;
    if (s->protocol == QLM_PPL_PER_LINE) {
      if (!n) continue;
      if ((rc = tokenize_push(&c, c.tok, r, n, 1, err))) break;
      int64_t k = c.tok_n < s->window ? c.tok_n : s->window;
      if (c.tok_n >= 2 && k - 1 > rows) rows = (int)(k - 1); /* the first hf window: min(L, n) - 1 rows */
    } else {
      if ((rc = lm_eval_page_tokens(&c, c.text + b, n, err))) break;
      int64_t k = c.tok_n < s->window ? c.tok_n : s->window;
      if (k > rows) rows = (int)k; /* the first rolling window: prefix + min(L, n) - 1 rows */
    }
    if (rows >= s->cap_rows) break;
  }
  free(c.toks);
  free(c.line);
  *rows_out = rows;
  return rc;
}

int qlm_ppl_stream_max_rows(qlm_ppl_stream *s, int *max_rows, qlm_error *err) {
  int rc = QLM_OK;
  while (!rc && !s->max_rows_known && !s->eof && s->tok_n < lookahead_tokens()) rc = stream_step(s, err);
  if (!rc && !s->max_rows_known && !s->eof) { /* rows and articles so far are short: look at the rest once */
    int rest = 0;
    rc = count_rest_rows(s, &rest, err);
    if (!rc && rest > s->max_rows) s->max_rows = rest;
  }
  if (!rc && s->eof && s->n_made == 0) rc = qlm_fail(err, QLM_EUSAGE, "perplexity: the text gives no token to score");
  if (!rc) s->max_rows_known = 1;
  *max_rows = s->max_rows;
  return stream_fail(s, rc, err);
}

int qlm_ppl_stream_open(const qlm_tokenizer *tok, const char *text, size_t len, const char *name, int protocol,
                        const qlm_ppl_params *prm, int model_ctx, int64_t max_windows, qlm_ppl_stream **out,
                        qlm_error *err) {
  *out = NULL;
  int ctx = model_ctx > 0 ? model_ctx : 1 << 20;
  int window = qlm_ppl_window_for(protocol, prm, model_ctx);
  int stride = prm && prm->stride ? prm->stride : window / 2;
  int hf = protocol == QLM_PPL_HF_WINDOW || protocol == QLM_PPL_PER_LINE;
  int rc = QLM_OK;
  if (protocol < 0 || protocol > QLM_PPL_LM_EVAL) rc = qlm_fail(err, QLM_EUSAGE, "perplexity: unknown protocol %d", protocol);
  else if (window > ctx)
    rc = qlm_fail(err, QLM_EUSAGE, "perplexity: window %d is longer than the model's context (%d positions)", window, ctx);
  else if (window < 2) rc = qlm_fail(err, QLM_EUSAGE, "perplexity: window %d is too short (at least 2)", window);
  else if (!hf && prm && prm->stride) rc = qlm_fail(err, QLM_EUSAGE, "perplexity: --stride applies to hf-window and per-line only");
  else if (hf && (stride < 1 || stride > window))
    rc = qlm_fail(err, QLM_EUSAGE, "hf windows: need max_length >= 2 and 1 <= stride <= max_length (got %d, %d)", window, stride);
  else if (protocol == QLM_PPL_LLAMACPP && window < 4)
    rc = qlm_fail(err, QLM_EUSAGE, "llamacpp: n_ctx %d is too small (at least 4)", window);
  const qlm_vocab *v = qlm_tokenizer_vocab(tok);
  if (!rc && protocol == QLM_PPL_LM_EVAL && v->bos_id < 0 && v->eos_id < 0)
    rc = qlm_fail(err, QLM_EUSAGE, "rolling windows: the tokenizer has neither BOS nor EOS for the prefix");
  if (rc) return name ? qlm_fail_prefix(err, "%s", name) : rc;
  qlm_ppl_stream *s = qlm_calloc(1, sizeof *s, "perplexity stream", err);
  if (!s) return QLM_ENOMEM;
  *s = (qlm_ppl_stream){.tok = tok, .text = text, .name = name, .len = len, .protocol = protocol, .window = window,
                        .stride = hf ? stride : 0, .max_windows = max_windows,
                        .cap_rows = protocol == QLM_PPL_LM_EVAL ? window : window - 1,
                        .replace_first = v->add_bos && v->bos_id >= 0 ? v->bos_id : -1,
                        .prefix = v->bos_id >= 0 ? v->bos_id : v->eos_id,
                        .n_docs = protocol == QLM_PPL_HF_WINDOW || protocol == QLM_PPL_LLAMACPP};
  /* one tokenizer call per piece where the ids provably stay those of the whole text; otherwise
   * (vocabularies that add EOS, SPM tokens containing "\n") the text is tokenized whole */
  s->split = (protocol == QLM_PPL_HF_WINDOW || protocol == QLM_PPL_LLAMACPP) && splittable(v);
  s->rest_v = *v;
  s->rest_v.add_space_prefix = false;
  s->rest_v.add_bos = false;
  if (s->split && (rc = qlm_tokenizer_new(&s->rest_v, &s->rest, err))) {
    free(s);
    return rc;
  }
  if (protocol == QLM_PPL_HF_WINDOW) hf_doc_start(s);
  *out = s;
  return QLM_OK;
}

void qlm_ppl_stream_free(qlm_ppl_stream *s) {
  if (!s) return;
  qlm_tokenizer_free(s->rest);
  free(s->line);
  free(s->pbuf);
  free(s->toks);
  free(s->q);
  free(s);
}

/* Bytes of the text no longer looked at (lm-eval's current article starts before s->pos). */
static size_t stream_consumed(const qlm_ppl_stream *s) {
  size_t c = s->protocol == QLM_PPL_LM_EVAL && s->page < s->pos ? s->page : s->pos;
  return c < s->len ? c : s->len;
}

void qlm_ppl_stream_get_info(const qlm_ppl_stream *s, qlm_ppl_stream_info *info) {
  *info = (qlm_ppl_stream_info){.protocol = s->protocol, .window = s->window, .stride = s->stride, .max_rows = s->max_rows,
                                .n_tokens = st_end(s), .n_win = s->n_made, .n_docs = s->n_docs, .n_words = s->n_words,
                                .n_bytes = s->n_bytes, .bytes_read = stream_consumed(s),
                                .text_bytes = s->len, .complete = s->eof, .tokens_held = s->tok_n};
}

/* The feed: windows handed out in order, at most max_windows; one window beyond max_windows is
 * made when it exists, so that a text with exactly that many windows is known to be complete. */
static int stream_fetch(void *ctx, qlm_ppl_window *out, int want, int *got, qlm_error *err) {
  qlm_ppl_stream *s = ctx;
  int64_t limit = s->max_windows > 0 ? s->max_windows : INT64_MAX;
  int64_t need = want < limit - s->n_given ? want : limit - s->n_given;
  int rc = QLM_OK;
  while (!rc && !s->eof && s->q_n - s->q_out < (need < 0 ? 0 : need) + (s->max_windows > 0)) rc = stream_step(s, err);
  if (rc) return stream_fail(s, rc, err);
  int n = 0;
  while (n < need && s->q_out < s->q_n) out[n++] = s->q[s->q_head + s->q_out++];
  s->n_given += n;
  *got = n;
  return QLM_OK;
}

static const int32_t *stream_tokens(void *ctx, int64_t begin) {
  qlm_ppl_stream *s = ctx;
  return s->toks + (begin - s->tok_base);
}

/* Windows handed out are scored: drop them, and the tokens before every window still to come. */
static void stream_done(void *ctx) {
  qlm_ppl_stream *s = ctx;
  s->q_head += s->q_out;
  s->q_n -= s->q_out;
  s->q_out = 0;
  int64_t keep = st_end(s);
  if (s->q_n) keep = s->q[s->q_head].begin;
  if (s->protocol == QLM_PPL_LLAMACPP && s->chunk * s->window < keep) keep = s->chunk * s->window;
  if ((s->protocol == QLM_PPL_HF_WINDOW || s->protocol == QLM_PPL_PER_LINE) && !s->hf_done && s->hf_b < keep) keep = s->hf_b;
  for (int64_t i = 0; i < s->q_n; i++) /* lm-eval's later windows may start before the head's */
    if (s->q[s->q_head + i].begin < keep) keep = s->q[s->q_head + i].begin;
  int64_t drop = keep - s->tok_base;
  if (drop > 0 && drop >= s->tok_n / 2) { /* slide when at least half the buffer goes: linear time overall */
    memmove(s->toks, s->toks + drop, (size_t)(s->tok_n - drop) * sizeof *s->toks);
    s->tok_base += drop;
    s->tok_n -= drop;
  }
}

/* Windows to run in all: known at the end of the text; until then --chunks, else unknown (-1). */
static int64_t stream_total(void *ctx) {
  const qlm_ppl_stream *s = ctx;
  if (!s->eof) return s->max_windows > 0 ? s->max_windows : -1;
  return s->max_windows > 0 && s->max_windows < s->n_made ? s->max_windows : s->n_made;
}

int qlm_ppl_run_stream(const qlm_model *m, qlm_ppl_stream *s, const qlm_ppl_opts *o, qlm_ppl_stats *st, qlm_error *err) {
  int max_rows = 0, rc = qlm_ppl_stream_max_rows(s, &max_rows, err);
  if (rc) {
    memset(st, 0, sizeof *st);
    return rc;
  }
  win_feed f = {.ctx = s, .fetch = stream_fetch, .tokens = stream_tokens, .done = stream_done, .total = stream_total};
  rc = score_feed(m, &f, max_rows, o, st, err);
  if (!rc && s->eof && s->n_made == 0) rc = stream_fail(s, qlm_fail(err, QLM_EUSAGE, "perplexity: the text gives no token to score"), err);
  return rc;
}
