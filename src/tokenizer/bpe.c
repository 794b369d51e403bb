/* bpe.c — byte-level BPE (GPT-2, Llama-3, Qwen2, SmolLM, StarCoder, Falcon, DeepSeek, ...).
 *
 * Encoding a raw text run: the pre-tokenizer regexes split it into pieces (each regex of a
 * sequence splits every piece of the previous one; the text between matches is kept as
 * pieces too, as llama.cpp's unicode_regex_split does); each piece is a word whose bytes
 * start as one symbol each (the token of the byte's GPT-2 unicode stand-in); then the
 * adjacent pair with the lowest merge rank is merged until no merge applies. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"

/* ---- GPT-2 byte <-> unicode map --------------------------------------------------------
 * Printable bytes '!'..'~', 0xA1..0xAC and 0xAE..0xFF stand for themselves; the other 68
 * bytes map, in byte order, to U+0100, U+0101, ... so every byte is a visible character. */
static char g_b2u[256][3];
static int16_t g_u2b[256 + 68];
static pthread_once_t g_map_once = PTHREAD_ONCE_INIT;

static int byte_is_printable(int b) { return (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae; }

static void byte_map_build(void) {
  int next = 256;
  for (int cp = 0; cp < 256 + 68; cp++) g_u2b[cp] = -1;
  for (int b = 0; b < 256; b++) {
    int cp = byte_is_printable(b) ? b : next++;
    g_u2b[cp] = (int16_t)b;
    if (cp < 0x80) {
      g_b2u[b][0] = (char)cp;
      g_b2u[b][1] = 0;
    } else {
      g_b2u[b][0] = (char)(0xc0 | (cp >> 6));
      g_b2u[b][1] = (char)(0x80 | (cp & 0x3f));
      g_b2u[b][2] = 0;
    }
  }
}

static void byte_map_init(void) { pthread_once(&g_map_once, byte_map_build); }

const char *tok_byte_to_unicode(unsigned char b) {
  byte_map_init();
  return g_b2u[b];
}

int tok_unicode_to_byte(uint32_t cp) {
  byte_map_init();
  return cp < 256 + 68 ? g_u2b[cp] : -1;
}

/* ---- pre-tokenizer regexes (as llama.cpp's llm_tokenizer_bpe, by tokenizer.ggml.pre) ---- */

/* GPT-2's pattern.  HF's ByteLevel pattern ends with an extra "|\s+"; that alternative only
 * matches whitespace the others leave unmatched, which is kept as a piece anyway. */
#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
#define RE_GPT2_HF RE_GPT2 "|\\s+"
/* Llama-3 and Qwen2 as written in their tokenizer.json.  PCRE2 supports (?i:...) and the
 * lookahead directly, so no adaptation is needed (llama.cpp rewrites (?i:'s) as '[sS] only
 * because std::regex lacks it; PCRE2 with UCP also folds 's' to U+017F, a difference no
 * real text exercises). */
#define RE_LLAMA3                                                                                                      \
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"  \
  "\\s+(?!\\S)|\\s+"
#define RE_QWEN2                                                                                                       \
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"      \
  "\\s+(?!\\S)|\\s+"
#define RE_CJK "[一-龥ࠀ-一가-퟿]+"

static const tok_pretok g_pretoks[] = {
    /* "default" is what llama.cpp assumes for a BPE vocab without tokenizer.ggml.pre
     * (gpt-neox conversions); HF's ByteLevel pre-tokenizer is plain GPT-2, so use that. */
    {"gpt-2|gpt2|default|mpt|olmo|jais|gpt-neox", 0, {RE_GPT2, NULL}},
    {"llama3|llama-v3|llama-bpe|falcon3|dbrx|smaug", 1, {RE_LLAMA3, NULL}},
    {"qwen2|stablelm2|deepseek-r1-qwen", 0, {RE_QWEN2, NULL}},
    /* HF: Sequence[Digits(individual_digits), ByteLevel] */
    {"starcoder|refact|smollm|command-r|codeshell|exaone|minerva", 0, {"\\p{N}", RE_GPT2, NULL}},
    {"falcon", 0, {"[\\p{P}\\$\\+<=>\\^~\\|`]+", RE_GPT2, "[0-9][0-9][0-9]", NULL}},
    {"deepseek-llm", 0,
     {"[\\r\\n]",
      /* Letters as code-point escapes: written literally, several of them (U+1FD3, U+1FDB,
       * U+1F7D, U+1FBE, U+2126, U+212A) are canonical singletons that editors normalise (NFC)
       * into other characters, which breaks the ranges. */
      "\\s?[A-Za-z\\x{B5}\\x{C0}-\\x{D6}\\x{D8}-\\x{F6}\\x{F8}-\\x{1BA}\\x{1BC}-\\x{1BF}\\x{1C4}-\\x{293}"
      "\\x{295}-\\x{2AF}\\x{370}-\\x{373}\\x{376}\\x{377}\\x{37B}-\\x{37D}\\x{37F}\\x{386}\\x{388}-\\x{38A}"
      "\\x{38C}\\x{38E}-\\x{3A1}\\x{3A3}-\\x{3F5}\\x{3F7}-\\x{481}\\x{48A}-\\x{52F}\\x{531}-\\x{556}"
      "\\x{10A0}-\\x{10C5}\\x{13A0}-\\x{13F5}\\x{13F8}-\\x{13FD}\\x{1C90}-\\x{1CBA}\\x{1CBD}-\\x{1CBF}"
      "\\x{1D00}-\\x{1D2B}\\x{1D6B}-\\x{1D77}\\x{1D79}-\\x{1D9A}\\x{1E00}-\\x{1F15}\\x{1F18}-\\x{1F1D}"
      "\\x{1F20}-\\x{1F45}\\x{1F48}-\\x{1F4D}\\x{1F50}-\\x{1F57}\\x{1F59}\\x{1F5B}\\x{1F5D}\\x{1F5F}-"
      "\\x{1F7D}\\x{1F80}-\\x{1FB4}\\x{1FB6}-\\x{1FBC}\\x{1FBE}\\x{1FC2}-\\x{1FC4}\\x{1FC6}-\\x{1FCC}"
      "\\x{1FD0}-\\x{1FD3}\\x{1FD6}-\\x{1FDB}\\x{1FE0}-\\x{1FEC}\\x{1FF2}-\\x{1FF4}\\x{1FF6}-\\x{1FFC}"
      "\\x{2102}\\x{2107}\\x{210A}-\\x{2113}\\x{2115}\\x{2119}-\\x{211D}\\x{2124}\\x{2126}\\x{2128}"
      "\\x{212A}-\\x{212D}\\x{212F}-\\x{2134}\\x{2139}\\x{213C}-\\x{213F}\\x{2145}-\\x{2149}\\x{214E}"
      "\\x{2183}\\x{2184}\\x{2C00}-\\x{2C7B}\\x{2C7E}-\\x{2CE4}\\x{2CEB}-\\x{2CEE}\\x{2CF2}\\x{2CF3}"
      "\\x{A640}-\\x{A66D}\\x{A680}-\\x{A69B}\\x{A722}-\\x{A76F}\\x{A771}-\\x{A787}\\x{A78B}-\\x{A78E}"
      "\\x{AB70}-\\x{ABBF}\\x{FB00}-\\x{FB06}\\x{FB13}-\\x{FB17}\\x{FF21}-\\x{FF3A}\\x{FF41}-\\x{FF5A}"
      "\\x{10400}-\\x{1044F}\\x{104B0}-\\x{104D3}\\x{104D8}-\\x{104FB}\\x{10C80}-\\x{10CB2}\\x{10CC0}-"
      "\\x{10CF2}\\x{118A0}-\\x{118DF}\\x{1E900}-\\x{1E943}]+",
      "\\s?[!-/:-~！-／：-～‘-‟　-。]+", "\\s+$", RE_CJK, "\\p{N}+", NULL}},
    {"deepseek-coder", 0, {"[\\r\\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", RE_CJK, "\\p{N}", NULL}},
};

static int name_in_list(const char *list, const char *name) {
  size_t n = strlen(name);
  for (const char *p = list; *p;) {
    const char *e = strchr(p, '|');
    size_t k = e ? (size_t)(e - p) : strlen(p);
    if (k == n && memcmp(p, name, n) == 0) return 1;
    if (!e) break;
    p = e + 1;
  }
  return 0;
}

const tok_pretok *tok_pretok_find(const char *name) {
  for (size_t i = 0; i < sizeof g_pretoks / sizeof g_pretoks[0]; i++)
    if (name_in_list(g_pretoks[i].names, name)) return &g_pretoks[i];
  return NULL;
}

const tok_pretok *tok_pretok_match(const char *const *regex, int n) {
  for (size_t i = 0; i < sizeof g_pretoks / sizeof g_pretoks[0]; i++) {
    const tok_pretok *p = &g_pretoks[i];
    int k = 0;
    while (k < n && p->regex[k]) {
      const char *r = regex[k];
      if (strcmp(r, RE_GPT2_HF) == 0) r = RE_GPT2;
      if (strcmp(r, p->regex[k]) != 0) break;
      k++;
    }
    if (k == n && !p->regex[k]) return p;
  }
  return NULL;
}

/* ---- merge table ------------------------------------------------------------------------ */

static uint32_t hash_pair(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  return (uint32_t)k;
}

static int pair_find(const tok_pairmap *m, int32_t l, int32_t r, int32_t *rank, int32_t *result) {
  if (!m->keys) return 0;
  uint64_t key = (((uint64_t)(uint32_t)l << 32) | (uint32_t)r) + 1;
  for (uint32_t i = hash_pair(key) & m->mask;; i = (i + 1) & m->mask) {
    if (m->keys[i] == 0) return 0;
    if (m->keys[i] == key) {
      *rank = m->rank[i];
      *result = m->result[i];
      return 1;
    }
  }
}

static int merges_build(struct qlm_tokenizer *tok, qlm_error *err) {
  const qlm_vocab *v = tok->v;
  tok_pairmap *m = &tok->merges;
  if (v->n_merges < 0 || v->n_merges > (1 << 24))
    return qlm_fail(err, QLM_ELIMIT, "tokenizer: %d merges out of range", v->n_merges);
  uint32_t cap = 16;
  while (cap < 2u * (uint32_t)v->n_merges) cap *= 2;
  m->mask = cap - 1;
  m->keys = calloc(cap, sizeof *m->keys);
  m->rank = malloc(cap * sizeof *m->rank);
  m->result = malloc(cap * sizeof *m->result);
  if (!m->keys || !m->rank || !m->result) return qlm_fail(err, QLM_ENOMEM, "tokenizer: out of memory for merges");
  char *cat = NULL;
  size_t cat_cap = 0;
  for (int i = 0; i < v->n_merges; i++) {
    const char *s = v->merges ? v->merges[i] : NULL;
    if (!s) return free(cat), qlm_fail(err, QLM_EFORMAT, "tokenizer: merge %d is missing", i);
    /* "left right": the separator is the first space after the first character */
    const char *sp = s[0] ? strchr(s + 1, ' ') : NULL;
    if (!sp) return free(cat), qlm_fail(err, QLM_EFORMAT, "tokenizer: merge %d '%.60s' has no space", i, s);
    size_t ln = (size_t)(sp - s), rn = strlen(sp + 1);
    int32_t l = tok_strmap_find(&tok->text2id, v, s, ln), r = tok_strmap_find(&tok->text2id, v, sp + 1, rn);
    if (tok_reserve((void **)&cat, &cat_cap, ln + rn + 1, 1, err)) return free(cat), err ? err->code : QLM_ENOMEM;
    memcpy(cat, s, ln);
    memcpy(cat + ln, sp + 1, rn);
    int32_t res = tok_strmap_find(&tok->text2id, v, cat, ln + rn);
    if (l < 0 || r < 0 || res < 0) continue; /* can never apply to vocab symbols */
    uint64_t key = (((uint64_t)(uint32_t)l << 32) | (uint32_t)r) + 1;
    uint32_t j = hash_pair(key) & m->mask;
    while (m->keys[j] != 0 && m->keys[j] != key) j = (j + 1) & m->mask;
    if (m->keys[j] == key) continue; /* duplicate merge: the first (best) rank wins */
    m->keys[j] = key;
    m->rank[j] = i;
    m->result[j] = res;
  }
  free(cat);
  return 0;
}

int tok_bpe_init(struct qlm_tokenizer *tok, qlm_error *err) {
  const qlm_vocab *v = tok->v;
  const tok_pretok *p = tok_pretok_find(v->pre);
  if (!p) return qlm_fail(err, QLM_EUNSUPPORTED, "tokenizer: unsupported BPE pre-tokenizer '%s'", v->pre);
  int rc = merges_build(tok, err);
  if (rc) return rc;
  for (int b = 0; b < 256; b++) {
    const char *u = tok_byte_to_unicode((unsigned char)b);
    tok->byte_tok[b] = tok_strmap_find(&tok->text2id, v, u, strlen(u));
  }
  tok->ignore_merges = p->ignore_merges;
  for (tok->n_regex = 0; tok->n_regex < TOK_MAX_REGEX && p->regex[tok->n_regex]; tok->n_regex++) {
    int ecode;
    PCRE2_SIZE eoff;
    /* DOLLAR_ENDONLY: "$" means the end of the piece only, as in std::regex / Rust regex. */
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)p->regex[tok->n_regex], PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY, &ecode, &eoff, NULL);
    if (!re) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(ecode, msg, sizeof msg);
      return qlm_fail(err, QLM_EINTERNAL, "tokenizer: pre-tokenizer '%s' regex %d: %s at offset %zu", v->pre,
                      tok->n_regex, (const char *)msg, (size_t)eoff);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* optional speed-up; the interpreter is the fallback */
    tok->regex[tok->n_regex] = re;
  }
  return 0;
}

void tok_bpe_free(struct qlm_tokenizer *tok) {
  free(tok->merges.keys);
  free(tok->merges.rank);
  free(tok->merges.result);
  for (int i = 0; i < tok->n_regex; i++) pcre2_code_free(tok->regex[i]);
}

/* ---- encoding --------------------------------------------------------------------------- */

static int span_push(size_t **sp, size_t *cap, size_t *n, size_t off, size_t len, qlm_error *err) {
  int rc = tok_reserve((void **)sp, cap, 2 * (*n + 1), sizeof(size_t), err);
  if (rc) return rc;
  (*sp)[2 * *n] = off;
  (*sp)[2 * *n + 1] = len;
  (*n)++;
  return 0;
}

/* Split text[off, off+len) by regex re: matches and the gaps between them become pieces. */
static int regex_split(const pcre2_code *re, tok_session *s, const char *text, size_t off, size_t len, size_t *n_out,
                       qlm_error *err) {
  size_t start = 0, pos = 0;
  int rc;
  while (pos < len) {
    int m = pcre2_match(re, (PCRE2_SPTR)(text + off), len, pos, PCRE2_NO_UTF_CHECK, s->md, NULL);
    if (m == PCRE2_ERROR_NOMATCH) break;
    if (m < 0) return qlm_fail(err, QLM_EINTERNAL, "tokenize: regex match failed (PCRE2 error %d)", m);
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(s->md);
    size_t ms = ov[0], me = ov[1];
    if (me == ms) { /* empty match: step over one character */
      pos = ms + (size_t)tok_utf8_len((unsigned char)text[off + ms]);
      continue;
    }
    if (ms > start && (rc = span_push(&s->spans2, &s->spans2_cap, n_out, off + start, ms - start, err))) return rc;
    if ((rc = span_push(&s->spans2, &s->spans2_cap, n_out, off + ms, me - ms, err))) return rc;
    start = pos = me;
  }
  if (start < len) return span_push(&s->spans2, &s->spans2_cap, n_out, off + start, len - start, err);
  return 0;
}

static int bpe_try_bigram(const struct qlm_tokenizer *tok, tok_session *s, int l, int r, qlm_error *err) {
  if (l < 0 || r < 0) return 0;
  const tok_sym *a = &s->syms[l], *b = &s->syms[r];
  int32_t rank, result;
  if (a->id < 0 || b->id < 0 || !pair_find(&tok->merges, a->id, b->id, &rank, &result)) return 0;
  tok_bigram bg = {.key = rank, .left = l, .right = r, .size = a->n + b->n, .result = result};
  return tok_heap_push(&s->heap, bg, err);
}

static int bpe_word(const struct qlm_tokenizer *tok, tok_session *s, const char *w, size_t n, tok_ids *out,
                    qlm_error *err) {
  int rc;
  if (tok->ignore_merges) { /* a whole word that is a token is taken as is (llama3) */
    if ((rc = tok_reserve((void **)&s->buf, &s->buf_cap, 2 * n + 1, 1, err))) return rc;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
      for (const char *u = tok_byte_to_unicode((unsigned char)w[i]); *u; u++) s->buf[k++] = *u;
    int32_t id = tok_strmap_find(&tok->text2id, tok->v, s->buf, k);
    if (id >= 0) return tok_ids_push(out, id, err);
  }
  if ((rc = tok_reserve((void **)&s->syms, &s->syms_cap, n, sizeof(tok_sym), err))) return rc;
  for (size_t i = 0; i < n; i++)
    s->syms[i] = (tok_sym){.off = (int)i, .n = 1, .prev = (int)i - 1, .next = i + 1 < n ? (int)i + 1 : -1,
                           .id = tok->byte_tok[(unsigned char)w[i]]};
  s->heap.n = 0;
  for (size_t i = 1; i < n; i++)
    if ((rc = bpe_try_bigram(tok, s, (int)i - 1, (int)i, err))) return rc;
  while (s->heap.n > 0) {
    tok_bigram bg = tok_heap_pop(&s->heap);
    tok_sym *l = &s->syms[bg.left], *r = &s->syms[bg.right];
    if (l->n == 0 || r->n == 0 || l->next != bg.right || l->n + r->n != bg.size) continue; /* stale */
    l->n += r->n;
    l->id = bg.result;
    r->n = 0;
    l->next = r->next;
    if (r->next >= 0) s->syms[r->next].prev = bg.left;
    if ((rc = bpe_try_bigram(tok, s, l->prev, bg.left, err))) return rc;
    if ((rc = bpe_try_bigram(tok, s, bg.left, l->next, err))) return rc;
  }
  for (int i = 0; i >= 0 && n > 0; i = s->syms[i].next) {
    int32_t id = s->syms[i].id >= 0 ? s->syms[i].id : tok->v->unk_id; /* a byte without a token */
    if (id >= 0 && (rc = tok_ids_push(out, id, err))) return rc;
  }
  return 0;
}

int tok_bpe_encode(const struct qlm_tokenizer *tok, tok_session *s, const char *text, size_t len, tok_ids *out,
                   qlm_error *err) {
  int rc;
  if (len > (size_t)1 << 30) return qlm_fail(err, QLM_ELIMIT, "tokenize: text of %zu bytes too long", len);
  if (!s->md && !(s->md = pcre2_match_data_create(4, NULL)))
    return qlm_fail(err, QLM_ENOMEM, "tokenize: out of memory for regex match data");
  size_t n = 0;
  if ((rc = span_push(&s->spans, &s->spans_cap, &n, 0, len, err))) return rc;
  for (int r = 0; r < tok->n_regex; r++) {
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
      if ((rc = regex_split(tok->regex[r], s, text, s->spans[2 * i], s->spans[2 * i + 1], &m, err))) return rc;
    size_t *t = s->spans; s->spans = s->spans2; s->spans2 = t;
    size_t c = s->spans_cap; s->spans_cap = s->spans2_cap; s->spans2_cap = c;
    n = m;
  }
  for (size_t i = 0; i < n; i++)
    if ((rc = bpe_word(tok, s, text + s->spans[2 * i], s->spans[2 * i + 1], out, err))) return rc;
  return 0;
}

const char *tok_regex_bytelevel(void) { return RE_GPT2_HF; }
