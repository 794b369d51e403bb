/* fuzz_hf_config.c — arbitrary bytes as a Hugging Face config.json.  The scratch folder also
 * holds a link to stories260K-hf's model.safetensors and a tokenizer.json that matches those
 * weights, so configs that agree with its shapes get past the tensor matching and the tokenizer
 * check (no more tokens than vocab_size) into a model load and a forward pass.
 *
 * The tokenizer.json is written once per process from stories260K.gguf's 512-token SentencePiece
 * vocabulary, in the llama-2 layout (BPE + byte_fallback, Prepend/Replace normalizer, merges
 * ranked by the merged token's score as HF's converter orders them).  Earlier this harness used
 * SmolLM2's 2 MB, 49152-token tokenizer.json: every config matching the weights re-parsed it and
 * then failed the vocab_size check, so no input ever reached the model. */
#include <cjson/cJSON.h>

#include "fuzz_model.h"
#include "tokenizer/tokenizer.h"

/* One merge "a b" for a token that splits into two vocab tokens; score = the merged token's. */
typedef struct spm_merge {
  char *text;
  float score;
} spm_merge;

static int merge_cmp(const void *a, const void *b) {
  const spm_merge *x = a, *y = b;
  return (x->score < y->score) - (x->score > y->score); /* best (highest) score first */
}

static int vocab_find(const qlm_vocab *v, const char *s, size_t n) {
  for (int i = 0; i < v->n_tokens; i++)
    if ((size_t)v->token_len[i] == n && memcmp(v->tokens[i], s, n) == 0) return i;
  return -1;
}

static int is_normal(const qlm_vocab *v, int i) {
  return !v->token_type || v->token_type[i] == QLM_TOKATTR_NORMAL;
}

/* model.merges: every split of a normal token into two normal tokens (512 tokens: cheap). */
static cJSON *spm_merges(const qlm_vocab *v) {
  spm_merge *m = NULL;
  size_t n = 0;
  for (int i = 0; i < v->n_tokens; i++) {
    if (!is_normal(v, i)) continue;
    for (int k = 1; k < v->token_len[i]; k++) {
      int a = vocab_find(v, v->tokens[i], (size_t)k), b = vocab_find(v, v->tokens[i] + k, (size_t)(v->token_len[i] - k));
      if (a < 0 || b < 0 || !is_normal(v, a) || !is_normal(v, b)) continue;
      spm_merge *nm = realloc(m, (n + 1) * sizeof *m);
      if (!nm) abort();
      m = nm;
      if (asprintf(&m[n].text, "%s %s", v->tokens[a], v->tokens[b]) < 0) abort();
      m[n++].score = v->scores ? v->scores[i] : 0;
    }
  }
  qsort(m, n, sizeof *m, merge_cmp);
  cJSON *arr = cJSON_CreateArray();
  for (size_t i = 0; i < n; i++) {
    cJSON_AddItemToArray(arr, cJSON_CreateString(m[i].text));
    free(m[i].text);
  }
  free(m);
  return arr;
}

/* The llama-2 style tokenizer.json text for vocab v (caller frees). */
static char *spm_tokenizer_json(const qlm_vocab *v) {
  cJSON *root = cJSON_CreateObject(), *added = cJSON_AddArrayToObject(root, "added_tokens");
  for (int i = 0; i < v->n_tokens; i++) {
    if (is_normal(v, i) || (v->token_type && v->token_type[i] == QLM_TOKATTR_BYTE)) continue;
    cJSON *t = cJSON_CreateObject();
    cJSON_AddNumberToObject(t, "id", i);
    cJSON_AddStringToObject(t, "content", v->tokens[i]);
    cJSON_AddBoolToObject(t, "special", 1);
    cJSON_AddItemToArray(added, t);
  }
  cJSON *norm = cJSON_AddObjectToObject(root, "normalizer");
  cJSON_AddStringToObject(norm, "type", "Sequence");
  cJSON *ns = cJSON_AddArrayToObject(norm, "normalizers"), *pre = cJSON_CreateObject(), *rep = cJSON_CreateObject();
  cJSON_AddStringToObject(pre, "type", "Prepend");
  cJSON_AddStringToObject(pre, "prepend", "\xe2\x96\x81");
  cJSON_AddStringToObject(rep, "type", "Replace");
  cJSON_AddStringToObject(cJSON_AddObjectToObject(rep, "pattern"), "String", " ");
  cJSON_AddStringToObject(rep, "content", "\xe2\x96\x81");
  cJSON_AddItemToArray(ns, pre);
  cJSON_AddItemToArray(ns, rep);
  cJSON *dec = cJSON_AddObjectToObject(root, "decoder");
  cJSON_AddStringToObject(dec, "type", "ByteFallback");
  if (v->bos_id >= 0) { /* post_processor: BOS before the text */
    cJSON *pp = cJSON_AddObjectToObject(root, "post_processor"), *st = cJSON_CreateObject(), *sq = cJSON_CreateObject();
    cJSON_AddStringToObject(pp, "type", "TemplateProcessing");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(st, "SpecialToken"), "id", v->tokens[v->bos_id]);
    cJSON_AddStringToObject(cJSON_AddObjectToObject(sq, "Sequence"), "id", "A");
    cJSON *single = cJSON_AddArrayToObject(pp, "single");
    cJSON_AddItemToArray(single, st);
    cJSON_AddItemToArray(single, sq);
  }
  cJSON *model = cJSON_AddObjectToObject(root, "model"), *vocab = cJSON_AddObjectToObject(model, "vocab");
  cJSON_AddStringToObject(model, "type", "BPE");
  cJSON_AddBoolToObject(model, "byte_fallback", 1);
  if (v->unk_id >= 0) cJSON_AddStringToObject(model, "unk_token", v->tokens[v->unk_id]);
  for (int i = 0; i < v->n_tokens; i++) cJSON_AddNumberToObject(vocab, v->tokens[i], i);
  cJSON_AddItemToObject(model, "merges", spm_merges(v));
  char *text = cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  if (!text) abort();
  return text;
}

/* Once per process: the weights link and the small tokenizer.json in the scratch folder.
 * Aborts when the shared model is missing: without it no config reaches the model. */
static const char *setup_scratch(void) {
  static char tok[128];
  if (tok[0]) return tok;
  char st[512], link[128], gguf[512];
  snprintf(link, sizeof link, "%s/model.safetensors", fuzz_dir());
  if (symlink(fuzz_shared("models/stories260K-hf/model.safetensors", st, sizeof st), link) != 0 ||
      access(st, R_OK) != 0) {
    perror(st);
    abort();
  }
  qlm_error err = {0};
  qlm_source *src = NULL;
  if (qlm_gguf_open(fuzz_shared("models/stories260K/stories260K.gguf", gguf, sizeof gguf), &src, &err)) {
    fprintf(stderr, "fuzz_hf_config: %s\n", err.msg);
    abort();
  }
  char *json = spm_tokenizer_json(&src->vocab);
  int n_tokens = src->vocab.n_tokens;
  qlm_source_close(src);
  fuzz_write("tokenizer.json", (const uint8_t *)json, strlen(json), tok, sizeof tok);
  free(json);
  /* the generated file must itself load, or every execution would stop at the tokenizer */
  qlm_vocab v;
  qlm_vocab_init(&v);
  if (qlm_vocab_from_tokenizer_json(tok, &v, &err) || v.n_tokens != n_tokens || v.kind != QLM_TOK_SPM) {
    fprintf(stderr, "fuzz_hf_config: generated %s does not load as a %d-token SPM vocab: %s\n", tok, n_tokens, err.msg);
    abort();
  }
  qlm_vocab_free(&v);
  return tok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *tok = setup_scratch();
  char path[128];
  fuzz_write("config.json", data, size, path, sizeof path);
  qlm_error err = {0};
  qlm_source *src = NULL;
  /* The tokenizer is given explicitly, so a config naming an arbitrary path cannot redirect it. */
  if (qlm_hf_open(fuzz_dir(), tok, &src, &err) == 0) {
    fuzz_run_source(src);
    qlm_source_close(src);
  }
  return 0;
}
