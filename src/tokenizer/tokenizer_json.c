/* tokenizer_json.c — Hugging Face tokenizer.json / tokenizer_config.json -> qlm_vocab.
 *
 * Only what decides tokenization is read: model.vocab/merges, added_tokens, and the
 * normalizer / pre_tokenizer / decoder / post_processor types.  Byte-level BPE pre-tokenizer
 * sequences are translated into a regex list and matched against the pre-tokenizers qlm
 * implements (bpe.c), whose llama.cpp name goes into vocab.pre. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mapfile.h"
#include "tokenizer/tok_internal.h"
#include "tokenizer/tokenizer.h"

#define JSON_MAX_BYTES ((size_t)512 << 20) /* largest tokenizer.json we read */
#define JSON_MAX_TOKENS (1 << 24)
#define JSON_MAX_TOKEN_BYTES (1 << 16)

static int json_load(const char *path, cJSON **root, qlm_error *err) {
  char *text = NULL;
  size_t len = 0;
  int rc = qlm_read_file(path, JSON_MAX_BYTES, &text, &len, err);
  if (rc) return rc;
  size_t ok = qlm_utf8_valid_prefix(text, len);
  if (ok != len) {
    rc = qlm_fail(err, QLM_EFORMAT, "%s: not valid UTF-8 (byte 0x%02x at offset %zu)", path, (unsigned char)text[ok], ok);
    free(text);
    return rc;
  }
  *root = cJSON_ParseWithLength(text, len);
  if (!*root) {
    const char *at = cJSON_GetErrorPtr();
    size_t off = at && at >= text && at <= text + len ? (size_t)(at - text) : 0;
    free(text);
    return qlm_fail(err, QLM_EFORMAT, "%s: invalid JSON near byte offset %zu", path, off);
  }
  free(text);
  return 0;
}

static const char *jstr(const cJSON *o, const char *key) {
  const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
  return cJSON_IsString(x) ? x->valuestring : NULL;
}

static int jtype_is(const cJSON *o, const char *type) {
  const char *t = jstr(o, "type");
  return t && strcmp(t, type) == 0;
}

/* Does `node` (or any member of a Sequence) have the given type? Returns the node or NULL. */
static const cJSON *find_type(const cJSON *node, const char *type) {
  if (!cJSON_IsObject(node)) return NULL;
  if (jtype_is(node, type)) return node;
  const char *lists[] = {"pretokenizers", "normalizers", "decoders", "processors"};
  for (int i = 0; i < 4; i++) {
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(node, lists[i]), *e;
    cJSON_ArrayForEach(e, arr) {
      const cJSON *f = find_type(e, type);
      if (f) return f;
    }
  }
  return NULL;
}

static int set_token(qlm_vocab *v, int id, const char *s, const char *path, qlm_error *err) {
  size_t n = strlen(s);
  if (n > JSON_MAX_TOKEN_BYTES) return qlm_fail(err, QLM_ELIMIT, "%s: token %d is %zu bytes long", path, id, n);
  char *c = malloc(n + 1);
  if (!c) return qlm_fail(err, QLM_ENOMEM, "%s: out of memory for token %d", path, id);
  memcpy(c, s, n + 1);
  free(v->tokens[id]);
  v->tokens[id] = c;
  v->token_len[id] = (int)n;
  return 0;
}

static int id_of(const qlm_vocab *v, const char *s) {
  size_t n = strlen(s);
  for (int i = v->n_tokens - 1; i >= 0; i--) /* last wins, like the tokenizer's hash */
    if (v->tokens[i] && (size_t)v->token_len[i] == n && memcmp(v->tokens[i], s, n) == 0) return i;
  return -1;
}

/* model.vocab + added_tokens -> tokens[], token_type[]. */
static int read_tokens(const cJSON *root, const cJSON *model, qlm_vocab *v, const char *path, qlm_error *err) {
  const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
  const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens"), *e;
  if (!cJSON_IsObject(vocab)) return qlm_fail(err, QLM_EFORMAT, "%s: model.vocab is not an object", path);
  double max_id = -1;
  cJSON_ArrayForEach(e, vocab) {
    if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= JSON_MAX_TOKENS || e->valuedouble != (int)e->valuedouble)
      return qlm_fail(err, QLM_EFORMAT, "%s: model.vocab['%.60s'] is not a token id in [0, %d)", path,
                      e->string ? e->string : "", JSON_MAX_TOKENS);
    if (e->valuedouble > max_id) max_id = e->valuedouble;
  }
  cJSON_ArrayForEach(e, added) {
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
    if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= JSON_MAX_TOKENS || !jstr(e, "content"))
      return qlm_fail(err, QLM_EFORMAT, "%s: added_tokens entry without a valid id and content", path);
    if (id->valuedouble > max_id) max_id = id->valuedouble;
  }
  if (max_id < 0) return qlm_fail(err, QLM_EFORMAT, "%s: model.vocab is empty", path);
  int n = (int)max_id + 1;
  /* ids are dense, so there are about as many entries as ids: refuse an id far beyond the
   * entries before allocating for it (small gaps are reported by id below) */
  if (n - cJSON_GetArraySize(vocab) - cJSON_GetArraySize(added) > 65536)
    return qlm_fail(err, QLM_EFORMAT, "%s: token id %d but only %d entries in model.vocab and added_tokens (ids must be dense)",
                    path, n - 1, cJSON_GetArraySize(vocab) + cJSON_GetArraySize(added));
  v->tokens = calloc((size_t)n, sizeof *v->tokens);
  v->token_len = calloc((size_t)n, sizeof *v->token_len);
  v->token_type = calloc((size_t)n, sizeof *v->token_type);
  if (!v->tokens || !v->token_len || !v->token_type) return qlm_fail(err, QLM_ENOMEM, "%s: out of memory for %d tokens", path, n);
  v->n_tokens = n;
  int rc;
  cJSON_ArrayForEach(e, vocab) {
    int id = (int)e->valuedouble;
    if (v->tokens[id]) return qlm_fail(err, QLM_EFORMAT, "%s: token id %d appears twice in model.vocab", path, id);
    if ((rc = set_token(v, id, e->string, path, err))) return rc;
    v->token_type[id] = QLM_TOKATTR_NORMAL;
  }
  cJSON_ArrayForEach(e, added) {
    int id = (int)cJSON_GetObjectItemCaseSensitive(e, "id")->valuedouble;
    if ((rc = set_token(v, id, jstr(e, "content"), path, err))) return rc;
    v->token_type[id] = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "special")) ? QLM_TOKATTR_CONTROL
                                                                                        : QLM_TOKATTR_USER_DEFINED;
  }
  for (int i = 0; i < n; i++)
    if (!v->tokens[i]) return qlm_fail(err, QLM_EFORMAT, "%s: token id %d has no text (ids must be dense)", path, i);
  return 0;
}

/* model.merges: "a b" strings or ["a", "b"] pairs -> "a b" strings. */
static int read_merges(const cJSON *model, qlm_vocab *v, const char *path, qlm_error *err) {
  const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges"), *e;
  if (!merges) return 0;
  if (!cJSON_IsArray(merges)) return qlm_fail(err, QLM_EFORMAT, "%s: model.merges is not an array", path);
  int n = cJSON_GetArraySize(merges);
  if (n > JSON_MAX_TOKENS) return qlm_fail(err, QLM_ELIMIT, "%s: %d merges exceed %d", path, n, JSON_MAX_TOKENS);
  v->merges = calloc((size_t)(n ? n : 1), sizeof *v->merges);
  if (!v->merges) return qlm_fail(err, QLM_ENOMEM, "%s: out of memory for merges", path);
  int i = 0;
  cJSON_ArrayForEach(e, merges) {
    const char *a, *b = NULL;
    if (cJSON_IsString(e)) {
      a = e->valuestring;
    } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(cJSON_GetArrayItem(e, 0)) &&
               cJSON_IsString(cJSON_GetArrayItem(e, 1))) {
      a = cJSON_GetArrayItem(e, 0)->valuestring;
      b = cJSON_GetArrayItem(e, 1)->valuestring;
    } else {
      return qlm_fail(err, QLM_EFORMAT, "%s: model.merges[%d] is neither \"a b\" nor [\"a\", \"b\"]", path, i);
    }
    size_t la = strlen(a), lb = b ? strlen(b) : 0;
    if (la + lb > 2 * JSON_MAX_TOKEN_BYTES) return qlm_fail(err, QLM_ELIMIT, "%s: model.merges[%d] too long", path, i);
    char *m = malloc(la + lb + 2);
    if (!m) return qlm_fail(err, QLM_ENOMEM, "%s: out of memory for merges", path);
    memcpy(m, a, la + 1);
    if (b) {
      m[la] = ' ';
      memcpy(m + la + 1, b, lb + 1);
    }
    v->merges[i++] = m;
    v->n_merges = i;
  }
  return 0;
}

/* Collect the regex sequence a byte-level pre-tokenizer applies. */
static int collect_regex(const cJSON *pt, const char **re, int *n, const char *path, qlm_error *err) {
  if (!cJSON_IsObject(pt)) return 0;
  const char *type = jstr(pt, "type");
  if (!type) return qlm_fail(err, QLM_EFORMAT, "%s: pre_tokenizer without a type", path);
  if (strcmp(type, "Sequence") == 0) {
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(pt, "pretokenizers")) {
      int rc = collect_regex(e, re, n, path, err);
      if (rc) return rc;
    }
    return 0;
  }
  const char *r = NULL;
  if (strcmp(type, "Split") == 0) {
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(pt, "pattern");
    const char *behavior = jstr(pt, "behavior");
    r = jstr(pat, "Regex");
    if (!r || (behavior && strcmp(behavior, "Isolated") != 0) || cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(pt, "invert")))
      return qlm_fail(err, QLM_EUNSUPPORTED, "%s: pre_tokenizer Split is supported only with an isolated Regex", path);
  } else if (strcmp(type, "Digits") == 0) {
    r = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(pt, "individual_digits")) ? "\\p{N}" : "\\p{N}+";
  } else if (strcmp(type, "ByteLevel") == 0) {
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(pt, "add_prefix_space")))
      return qlm_fail(err, QLM_EUNSUPPORTED, "%s: ByteLevel pre_tokenizer with add_prefix_space is not supported", path);
    if (cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(pt, "use_regex"))) return 0;
    r = tok_regex_bytelevel();
  } else {
    return qlm_fail(err, QLM_EUNSUPPORTED, "%s: pre_tokenizer type '%s' is not supported", path, type);
  }
  if (*n == TOK_MAX_REGEX) return qlm_fail(err, QLM_EUNSUPPORTED, "%s: more than %d pre-tokenizer steps", path, TOK_MAX_REGEX);
  re[(*n)++] = r;
  return 0;
}

static int setup_bpe(const cJSON *root, qlm_vocab *v, const char *path, qlm_error *err) {
  const char *re[TOK_MAX_REGEX];
  int n = 0;
  int rc = collect_regex(cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), re, &n, path, err);
  if (rc) return rc;
  const tok_pretok *p = tok_pretok_match(re, n);
  if (!p)
    return qlm_fail(err, QLM_EUNSUPPORTED, "%s: byte-level pre-tokenizer with %d regex step(s) (first: '%.80s') is not "
                    "one qlm implements", path, n, n ? re[0] : "");
  size_t k = strcspn(p->names, "|");
  if (k >= sizeof v->pre) k = sizeof v->pre - 1;
  memcpy(v->pre, p->names, k);
  v->pre[k] = 0;
  if (strcmp(v->pre, "starcoder") == 0) strcpy(v->pre, "smollm"); /* same regexes; SmolLM's name reads better */
  v->kind = QLM_TOK_BPE;
  return 0;
}

/* SentencePiece-converted BPE (llama-2 style): scores from merge ranks, byte tokens, unk. */
static int setup_spm(const cJSON *root, const cJSON *model, qlm_vocab *v, const char *path, qlm_error *err) {
  v->kind = QLM_TOK_SPM;
  v->scores = malloc(sizeof(float) * (size_t)v->n_tokens);
  if (!v->scores) return qlm_fail(err, QLM_ENOMEM, "%s: out of memory for scores", path);
  /* Tokens no merge produces rank after every merge (they are never merge results). */
  for (int i = 0; i < v->n_tokens; i++) v->scores[i] = -(float)(v->n_merges + i);
  tok_strmap map = {0};
  int rc = tok_strmap_build(&map, v, err);
  if (rc) return rc;
  char *cat = NULL;
  size_t cap = 0;
  for (int i = v->n_merges - 1; i >= 0; i--) { /* backwards: the best (lowest) rank is written last */
    const char *m = v->merges[i], *sp = m[0] ? strchr(m + 1, ' ') : NULL;
    if (!sp) continue;
    size_t la = (size_t)(sp - m), lb = strlen(sp + 1);
    if ((rc = tok_reserve((void **)&cat, &cap, la + lb + 1, 1, err))) break;
    memcpy(cat, m, la);
    memcpy(cat + la, sp + 1, lb);
    int id = tok_strmap_find(&map, v, cat, la + lb);
    if (id >= 0) v->scores[id] = -(float)i;
  }
  free(cat);
  free(map.slots);
  if (rc) return rc;
  for (int i = 0; i < v->n_tokens; i++) {
    const char *t = v->tokens[i];
    if (v->token_len[i] == 6 && t[0] == '<' && t[1] == '0' && t[2] == 'x' && t[5] == '>') v->token_type[i] = QLM_TOKATTR_BYTE;
  }
  const char *unk = jstr(model, "unk_token");
  if (unk && (v->unk_id = id_of(v, unk)) >= 0) v->token_type[v->unk_id] = QLM_TOKATTR_UNKNOWN;
  /* A "▁" prefix comes from a Prepend normalizer or a Metaspace pre-tokenizer. */
  const cJSON *prep = find_type(cJSON_GetObjectItemCaseSensitive(root, "normalizer"), "Prepend");
  const cJSON *meta = find_type(cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), "Metaspace");
  const char *scheme = meta ? jstr(meta, "prepend_scheme") : NULL;
  v->add_space_prefix = prep != NULL || (meta && (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(meta, "add_prefix_space")) ||
                                                  (scheme && strcmp(scheme, "never") != 0)));
  return 0;
}

/* BOS from post_processor TemplateProcessing: a SpecialToken before the first Sequence. */
static void read_post_processor(const cJSON *root, qlm_vocab *v) {
  const cJSON *tp = find_type(cJSON_GetObjectItemCaseSensitive(root, "post_processor"), "TemplateProcessing"), *e;
  if (!tp) return;
  cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(tp, "single")) {
    if (cJSON_GetObjectItemCaseSensitive(e, "Sequence")) break;
    const char *id = jstr(cJSON_GetObjectItemCaseSensitive(e, "SpecialToken"), "id");
    if (id && (v->bos_id = id_of(v, id)) >= 0) v->add_bos = true;
  }
}

static int from_json(const cJSON *root, qlm_vocab *v, const char *path, qlm_error *err) {
  const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
  if (!cJSON_IsObject(model)) return qlm_fail(err, QLM_EFORMAT, "%s: no \"model\" object", path);
  const char *type = jstr(model, "type");
  if (!type && cJSON_GetObjectItemCaseSensitive(model, "merges")) type = "BPE"; /* old files omit it */
  if (!type || strcmp(type, "BPE") != 0)
    return qlm_fail(err, QLM_EUNSUPPORTED, "%s: tokenizer model type '%s' is not supported (only BPE)", path,
                    type ? type : "(none)");
  int rc;
  if ((rc = read_tokens(root, model, v, path, err)) || (rc = read_merges(model, v, path, err))) return rc;
  const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
  const cJSON *dec = cJSON_GetObjectItemCaseSensitive(root, "decoder");
  const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
  if (find_type(pre, "ByteLevel") || find_type(dec, "ByteLevel")) {
    rc = setup_bpe(root, v, path, err);
  } else if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback")) || find_type(pre, "Metaspace") ||
             find_type(dec, "ByteFallback") || find_type(norm, "Prepend")) {
    rc = setup_spm(root, model, v, path, err);
  } else {
    rc = qlm_fail(err, QLM_EUNSUPPORTED, "%s: BPE model that is neither byte-level nor SentencePiece-style", path);
  }
  if (rc) return rc;
  read_post_processor(root, v);
  return 0;
}

int qlm_vocab_from_tokenizer_json(const char *path, qlm_vocab *v, qlm_error *err) {
  qlm_vocab_free(v); /* start from a clean, initialised vocab */
  cJSON *root = NULL;
  int rc = json_load(path, &root, err);
  if (rc) return rc;
  rc = from_json(root, v, path, err);
  cJSON_Delete(root);
  if (rc) qlm_vocab_free(v);
  return rc;
}

/* "bos_token": "<s>" or {"content": "<s>", ...}; absent or null -> NULL. */
static const char *token_text(const cJSON *cfg, const char *key) {
  const cJSON *x = cJSON_GetObjectItemCaseSensitive(cfg, key);
  return cJSON_IsString(x) ? x->valuestring : jstr(x, "content");
}

int qlm_vocab_apply_tokenizer_config(const char *path, qlm_vocab *v, qlm_error *err) {
  cJSON *cfg = NULL;
  int rc = json_load(path, &cfg, err);
  if (rc) return rc;
  if (!cJSON_IsObject(cfg)) {
    cJSON_Delete(cfg);
    return qlm_fail(err, QLM_EFORMAT, "%s: not a JSON object", path);
  }
  const char *keys[4] = {"bos_token", "eos_token", "unk_token", "pad_token"};
  int *ids[4] = {&v->bos_id, &v->eos_id, &v->unk_id, &v->pad_id};
  for (int i = 0; i < 4 && !rc; i++) {
    const char *t = token_text(cfg, keys[i]);
    if (!t) continue;
    int id = id_of(v, t);
    if (id < 0) rc = qlm_fail(err, QLM_EFORMAT, "%s: %s '%.60s' is not a token of the vocab", path, keys[i], t);
    else *ids[i] = id;
  }
  const cJSON *b = cJSON_GetObjectItemCaseSensitive(cfg, "add_bos_token");
  const cJSON *e = cJSON_GetObjectItemCaseSensitive(cfg, "add_eos_token");
  if (cJSON_IsBool(b)) v->add_bos = cJSON_IsTrue(b);
  if (cJSON_IsBool(e)) v->add_eos = cJSON_IsTrue(e);
  cJSON_Delete(cfg);
  return rc;
}
