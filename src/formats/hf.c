/* hf.c — Hugging Face model folders: config.json + safetensors (+ tokenizer.json).
 *
 * config.json gives the hyper-parameters; tensors are renamed from HF's names to the
 * canonical (GGUF) names of source.h and their shapes checked against the hyper-parameters.
 * Shapes in safetensors are row-major [rows, cols], i.e. canonical ne[0] = cols.  GPT-2's
 * Conv1D weights are stored [in, out] (the transpose of a Linear's [out, in]), so they are
 * transposed into buffers this reader owns; everything else points into the mmap. */
#include "formats/source.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/memlimit.h"
#include "formats/safetensors.h"
#include "tokenizer/tokenizer.h"

#define HF_MAX_JSON (16u << 20) /* config.json / generation_config.json */

typedef struct hf_priv {
  qlm_st_set st;
  int n_owned;
  void **owned; /* [n_owned] transposed copies (GPT-2 Conv1D weights) */
} hf_priv;

static void hf_free_priv(void *p) {
  hf_priv *h = p;
  if (!h) return;
  qlm_st_free(&h->st);
  for (int i = 0; i < h->n_owned; i++) free(h->owned[i]);
  free(h->owned);
  free(h);
}

/* ---- config.json ---------------------------------------------------------------------- */

static int load_json(const char *path, cJSON **out, qlm_error *err) {
  char *text = NULL;
  size_t len = 0;
  *out = NULL;
  int rc = qlm_read_file(path, HF_MAX_JSON, &text, &len, err);
  if (rc) return rc;
  size_t ok = qlm_utf8_valid_prefix(text, len);
  if (ok != len) {
    rc = qlm_fail(err, QLM_EFORMAT, "%s: not valid UTF-8 (byte 0x%02x at offset %zu)", path, (unsigned char)text[ok], ok);
    free(text);
    return rc;
  }
  *out = cJSON_ParseWithLength(text, len);
  free(text);
  if (!*out || !cJSON_IsObject(*out)) {
    cJSON_Delete(*out);
    *out = NULL;
    return qlm_fail(err, QLM_EFORMAT, "%s: not a valid JSON object", path);
  }
  return QLM_OK;
}

/* Integer field `key` in [lo, hi]; `dflt` < 0 means the key is required. A JSON null counts as absent. */
static int cfg_int(const char *path, const cJSON *cfg, const char *key, long dflt, long lo, long hi, int *out,
                   qlm_error *err) {
  const cJSON *j = cJSON_GetObjectItemCaseSensitive(cfg, key);
  if (!j || cJSON_IsNull(j)) {
    if (dflt < 0) return qlm_fail(err, QLM_EFORMAT, "%s: missing \"%s\"", path, key);
    *out = (int)dflt;
    return QLM_OK;
  }
  double d = cJSON_IsNumber(j) ? j->valuedouble : NAN;
  if (!(d == floor(d))) return qlm_fail(err, QLM_EFORMAT, "%s: \"%s\" must be an integer", path, key);
  if (d < lo || d > hi)
    return qlm_fail(err, d > hi ? QLM_ELIMIT : QLM_EFORMAT, "%s: \"%s\" = %.0f is outside [%ld, %ld]", path, key, d,
                    lo, hi);
  *out = (int)d;
  return QLM_OK;
}

static int cfg_float(const char *path, const cJSON *cfg, const char *key, double dflt, double lo, double hi,
                     float *out, qlm_error *err) {
  const cJSON *j = cJSON_GetObjectItemCaseSensitive(cfg, key);
  if (!j || cJSON_IsNull(j)) {
    *out = (float)dflt;
    return QLM_OK;
  }
  if (!cJSON_IsNumber(j) || !(j->valuedouble >= lo && j->valuedouble <= hi))
    return qlm_fail(err, QLM_EFORMAT, "%s: \"%s\" must be a number in [%g, %g]", path, key, lo, hi);
  *out = (float)j->valuedouble;
  return QLM_OK;
}

static int cfg_bool(const char *path, const cJSON *cfg, const char *key, bool dflt, bool *out, qlm_error *err) {
  const cJSON *j = cJSON_GetObjectItemCaseSensitive(cfg, key);
  if (!j || cJSON_IsNull(j)) {
    *out = dflt;
    return QLM_OK;
  }
  if (!cJSON_IsBool(j)) return qlm_fail(err, QLM_EFORMAT, "%s: \"%s\" must be true or false", path, key);
  *out = cJSON_IsTrue(j);
  return QLM_OK;
}

/* architectures[0] (or model_type) -> arch. */
static int parse_arch(const char *path, const cJSON *cfg, qlm_arch *arch, qlm_error *err) {
  static const struct { const char *hf, *model_type; qlm_arch arch; } tab[] = {
      {"LlamaForCausalLM", "llama", QLM_ARCH_LLAMA},
      {"MistralForCausalLM", "mistral", QLM_ARCH_LLAMA},
      {"Qwen2ForCausalLM", "qwen2", QLM_ARCH_QWEN2},
      {"GPT2LMHeadModel", "gpt2", QLM_ARCH_GPT2},
  };
  const cJSON *archs = cJSON_GetObjectItemCaseSensitive(cfg, "architectures");
  const char *name = cJSON_GetStringValue(cJSON_GetArrayItem(archs, 0));
  const char *mt = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(cfg, "model_type"));
  for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
    if ((name && strcmp(name, tab[i].hf) == 0) || (!name && mt && strcmp(mt, tab[i].model_type) == 0)) {
      *arch = tab[i].arch;
      return QLM_OK;
    }
  return qlm_fail(err, QLM_EUNSUPPORTED,
                  "%s: architecture '%s' is not supported (supported: LlamaForCausalLM, MistralForCausalLM, "
                  "Qwen2ForCausalLM, GPT2LMHeadModel)",
                  path, name ? name : mt ? mt : "(none given)");
}

/* transformers >= 5 writes {"rope_parameters": {"rope_type": "default", "rope_theta": ...}} instead of a
 * top-level rope_theta; when present it wins. Other rope types (linear, yarn, llama3, ...) scale the
 * frequencies, which qlm does not implement. */
static int parse_rope_parameters(const char *path, const cJSON *cfg, float *theta, qlm_error *err) {
  const cJSON *rp = cJSON_GetObjectItemCaseSensitive(cfg, "rope_parameters");
  if (!rp || cJSON_IsNull(rp)) return QLM_OK;
  if (!cJSON_IsObject(rp)) return qlm_fail(err, QLM_EFORMAT, "%s: \"rope_parameters\" must be an object", path);
  const cJSON *type = cJSON_GetObjectItemCaseSensitive(rp, "rope_type");
  if (type && !(cJSON_IsString(type) && strcmp(type->valuestring, "default") == 0))
    return qlm_fail(err, QLM_EUNSUPPORTED, "%s: rope_parameters.rope_type %s is not supported (only \"default\")", path,
                    cJSON_IsString(type) ? type->valuestring : "(not a string)");
  return cfg_float(path, rp, "rope_theta", *theta, 1, 1e12, theta, err);
}

static int parse_llama_hparams(const char *path, const cJSON *cfg, qlm_hparams *hp, qlm_error *err) {
  int rc;
  if ((rc = cfg_int(path, cfg, "hidden_size", -1, 1, 1 << 16, &hp->n_embd, err)) ||
      (rc = cfg_int(path, cfg, "intermediate_size", -1, 1, 1 << 20, &hp->n_ff, err)) ||
      (rc = cfg_int(path, cfg, "num_hidden_layers", -1, 1, 4096, &hp->n_layer, err)) ||
      (rc = cfg_int(path, cfg, "num_attention_heads", -1, 1, 4096, &hp->n_head, err)) ||
      (rc = cfg_int(path, cfg, "num_key_value_heads", hp->n_head, 1, 4096, &hp->n_head_kv, err)) ||
      (rc = cfg_int(path, cfg, "vocab_size", -1, 1, 1 << 22, &hp->n_vocab, err)) ||
      (rc = cfg_int(path, cfg, "max_position_embeddings", 2048, 1, 1 << 24, &hp->n_ctx, err)) ||
      (rc = cfg_float(path, cfg, "rms_norm_eps", 1e-6, 0, 1, &hp->norm_eps, err)) ||
      (rc = cfg_float(path, cfg, "rope_theta", 10000.0, 1, 1e12, &hp->rope_theta, err)))
    return rc;
  if (hp->n_embd % hp->n_head && !cJSON_GetObjectItemCaseSensitive(cfg, "head_dim"))
    return qlm_fail(err, QLM_EFORMAT, "%s: hidden_size %d is not a multiple of num_attention_heads %d", path,
                    hp->n_embd, hp->n_head);
  if ((rc = cfg_int(path, cfg, "head_dim", hp->n_embd / hp->n_head, 2, 4096, &hp->head_dim, err))) return rc;
  if (hp->head_dim % 2) return qlm_fail(err, QLM_EFORMAT, "%s: head_dim %d is odd (RoPE needs pairs)", path, hp->head_dim);
  if (hp->n_head % hp->n_head_kv)
    return qlm_fail(err, QLM_EFORMAT, "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d", path,
                    hp->n_head, hp->n_head_kv);
  const cJSON *rs = cJSON_GetObjectItemCaseSensitive(cfg, "rope_scaling");
  if (rs && !cJSON_IsNull(rs))
    return qlm_fail(err, QLM_EUNSUPPORTED, "%s: \"rope_scaling\" is set; RoPE scaling is not supported", path);
  if ((rc = parse_rope_parameters(path, cfg, &hp->rope_theta, err))) return rc;
  hp->n_rot = hp->head_dim;
  hp->rope_style = QLM_ROPE_NEOX; /* HF checkpoints use the rotate-half layout */
  return QLM_OK;
}

static int parse_gpt2_hparams(const char *path, const cJSON *cfg, qlm_hparams *hp, qlm_error *err) {
  int rc;
  if ((rc = cfg_int(path, cfg, "n_embd", -1, 1, 1 << 16, &hp->n_embd, err)) ||
      (rc = cfg_int(path, cfg, "n_layer", -1, 1, 4096, &hp->n_layer, err)) ||
      (rc = cfg_int(path, cfg, "n_head", -1, 1, 4096, &hp->n_head, err)) ||
      (rc = cfg_int(path, cfg, "n_positions", 1024, 1, 1 << 24, &hp->n_ctx, err)) ||
      (rc = cfg_int(path, cfg, "n_inner", 4L * hp->n_embd, 1, 1 << 20, &hp->n_ff, err)) ||
      (rc = cfg_int(path, cfg, "vocab_size", -1, 1, 1 << 22, &hp->n_vocab, err)) ||
      (rc = cfg_float(path, cfg, "layer_norm_epsilon", 1e-5, 0, 1, &hp->norm_eps, err)))
    return rc;
  if (hp->n_embd % hp->n_head)
    return qlm_fail(err, QLM_EFORMAT, "%s: n_embd %d is not a multiple of n_head %d", path, hp->n_embd, hp->n_head);
  hp->n_head_kv = hp->n_head;
  hp->head_dim = hp->n_rot = hp->n_embd / hp->n_head;
  hp->rope_theta = 10000.0f; /* unused: learned positions */
  hp->rope_style = QLM_ROPE_NONE;
  return QLM_OK;
}

/* config.json's scalar fields become metadata "hf.<key>" (for `qlm info`). */
static int add_config_meta(qlm_source *src, const cJSON *cfg, qlm_error *err) {
  static const char *arch_names[] = {"llama", "qwen2", "gpt2"};
  qlm_meta *m = qlm_source_add_meta(src, "general.architecture", err);
  if (!m) return err ? err->code : QLM_ENOMEM;
  m->type = QLM_META_STRING;
  if (!(m->v.s = strdup(arch_names[src->hp.arch]))) return qlm_fail(err, QLM_ENOMEM, "out of memory");
  for (const cJSON *e = cfg->child; e; e = e->next) {
    if (!(cJSON_IsNumber(e) || cJSON_IsBool(e) || cJSON_IsString(e)) || strlen(e->string) > 200) continue;
    char key[256];
    snprintf(key, sizeof key, "hf.%s", e->string);
    if (!(m = qlm_source_add_meta(src, key, err))) return err ? err->code : QLM_ENOMEM;
    if (cJSON_IsBool(e)) {
      m->type = QLM_META_BOOL;
      m->v.u = cJSON_IsTrue(e);
    } else if (cJSON_IsString(e)) {
      m->type = QLM_META_STRING;
      if (!(m->v.s = strdup(e->valuestring))) return qlm_fail(err, QLM_ENOMEM, "out of memory");
    } else if (e->valuedouble == floor(e->valuedouble) && fabs(e->valuedouble) < 9007199254740992.0) {
      m->type = QLM_META_I64;
      m->v.i = (int64_t)e->valuedouble;
    } else {
      m->type = QLM_META_F64;
      m->v.f = e->valuedouble;
    }
  }
  return QLM_OK;
}

/* ---- tensor names ---------------------------------------------------------------------- */

/* One HF sub-name inside a layer and its canonical counterpart. */
typedef struct name_rule {
  const char *hf;    /* e.g. "self_attn.q_proj" */
  const char *canon; /* e.g. "attn_q" */
  bool conv1d;       /* GPT-2 Conv1D: weight stored [in, out], needs a transpose */
} name_rule;

static const name_rule llama_layer_rules[] = {
    {"self_attn.q_proj", "attn_q", false},   {"self_attn.k_proj", "attn_k", false},
    {"self_attn.v_proj", "attn_v", false},   {"self_attn.o_proj", "attn_output", false},
    {"mlp.gate_proj", "ffn_gate", false},    {"mlp.up_proj", "ffn_up", false},
    {"mlp.down_proj", "ffn_down", false},    {"input_layernorm", "attn_norm", false},
    {"post_attention_layernorm", "ffn_norm", false},
};
static const name_rule gpt2_layer_rules[] = {
    {"ln_1", "attn_norm", false},       {"attn.c_attn", "attn_qkv", true}, {"attn.c_proj", "attn_output", true},
    {"ln_2", "ffn_norm", false},        {"mlp.c_fc", "ffn_up", true},      {"mlp.c_proj", "ffn_down", true},
};
static const name_rule llama_global_rules[] = {
    {"model.embed_tokens", "token_embd", false}, {"model.norm", "output_norm", false}, {"lm_head", "output", false},
};
static const name_rule gpt2_global_rules[] = {
    {"wte", "token_embd", false}, {"wpe", "position_embd", false}, {"ln_f", "output_norm", false},
    {"lm_head", "output", false},
};

enum { MAP_UNKNOWN = -1, MAP_SKIP = 0, MAP_OK = 1 };

/* "<base>.weight" / "<base>.bias": split off the suffix. */
static const char *param_suffix(const char *name, size_t *base_len) {
  size_t n = strlen(name);
  if (n > 7 && strcmp(name + n - 7, ".weight") == 0) {
    *base_len = n - 7;
    return ".weight";
  }
  if (n > 5 && strcmp(name + n - 5, ".bias") == 0) {
    *base_len = n - 5;
    return ".bias";
  }
  return NULL;
}

static int match_rules(const name_rule *rules, size_t n, const char *base, size_t len, const name_rule **hit) {
  for (size_t i = 0; i < n; i++)
    if (strlen(rules[i].hf) == len && memcmp(rules[i].hf, base, len) == 0) {
      *hit = &rules[i];
      return 1;
    }
  return 0;
}

/* HF name -> canonical name (into out[cap]); *conv1d set for weights needing a transpose. */
static int map_name(qlm_arch arch, const char *name, char *out, size_t cap, bool *conv1d) {
  bool gpt2 = arch == QLM_ARCH_GPT2;
  *conv1d = false;
  if (gpt2 && strncmp(name, "transformer.", 12) == 0) name += 12;
  /* buffers and caches that some checkpoints save alongside the weights */
  const char *last = strrchr(name, '.');
  if (last && (strcmp(last, ".inv_freq") == 0 || (gpt2 && (strcmp(last, ".masked_bias") == 0 ||
                                                           (strcmp(last, ".bias") == 0 && last - name >= 5 &&
                                                            strncmp(last - 5, ".attn", 5) == 0)))))
    return MAP_SKIP;
  size_t len;
  const char *suffix = param_suffix(name, &len);
  if (!suffix) return MAP_UNKNOWN;
  const name_rule *r;
  if (match_rules(gpt2 ? gpt2_global_rules : llama_global_rules, gpt2 ? 4 : 3, name, len, &r)) {
    snprintf(out, cap, "%s%s", r->canon, suffix);
    return MAP_OK;
  }
  const char *prefix = gpt2 ? "h." : "model.layers.";
  size_t pl = strlen(prefix);
  if (strncmp(name, prefix, pl) != 0) return MAP_UNKNOWN;
  const char *p = name + pl;
  long layer = 0;
  int digits = 0;
  for (; *p >= '0' && *p <= '9' && digits < 6; p++, digits++) layer = layer * 10 + (*p - '0');
  if (!digits || *p != '.') return MAP_UNKNOWN;
  p++;
  size_t rlen = (size_t)(name + len - p);
  if (!match_rules(gpt2 ? gpt2_layer_rules : llama_layer_rules,
                   gpt2 ? sizeof gpt2_layer_rules / sizeof *gpt2_layer_rules
                        : sizeof llama_layer_rules / sizeof *llama_layer_rules,
                   p, rlen, &r))
    return MAP_UNKNOWN;
  snprintf(out, cap, "blk.%ld.%s%s", layer, r->canon, suffix);
  *conv1d = r->conv1d && strcmp(suffix, ".weight") == 0;
  return MAP_OK;
}

/* ---- expected tensors ------------------------------------------------------------------ */

typedef struct expect {
  char name[64];
  int n_dims;
  int64_t ne[2];
  const qlm_st_tensor *st; /* the file's tensor, once found */
  bool conv1d;
} expect;

typedef struct expect_list {
  int n, cap;
  expect *e;      /* [n] in canonical order (the order tensors are added to the source) */
  expect **by_name; /* [n] sorted by name, for lookups */
} expect_list;

static int expect_add(expect_list *l, const char *name, int n_dims, int64_t ne0, int64_t ne1, qlm_error *err) {
  if (l->n == l->cap) {
    int cap = l->cap ? l->cap * 2 : 64;
    expect *e = realloc(l->e, (size_t)cap * sizeof *e);
    if (!e) return qlm_fail(err, QLM_ENOMEM, "out of memory");
    l->e = e;
    l->cap = cap;
  }
  expect *x = &l->e[l->n++];
  memset(x, 0, sizeof *x);
  snprintf(x->name, sizeof x->name, "%s", name);
  x->n_dims = n_dims;
  x->ne[0] = ne0;
  x->ne[1] = ne1;
  return QLM_OK;
}

/* The canonical tensors an architecture needs, with their shapes (see source.h). */
static int build_expected(const qlm_hparams *hp, expect_list *l, qlm_error *err) {
  int64_t E = hp->n_embd, V = hp->n_vocab, F = hp->n_ff;
  int64_t Q = (int64_t)hp->n_head * hp->head_dim, KV = (int64_t)hp->n_head_kv * hp->head_dim;
  bool gpt2 = hp->arch == QLM_ARCH_GPT2;
  int rc = 0;
  char nm[64];
#define ADD(n, nd, a, b) \
  do { if ((rc = expect_add(l, n, nd, a, b, err))) return rc; } while (0)
  ADD("token_embd.weight", 2, E, V);
  if (gpt2) ADD("position_embd.weight", 2, E, hp->n_ctx);
  for (int i = 0; i < hp->n_layer; i++) {
#define LADD(sfx, nd, a, b) \
  do { snprintf(nm, sizeof nm, "blk.%d.%s", i, sfx); ADD(nm, nd, a, b); } while (0)
    LADD("attn_norm.weight", 1, E, 1);
    if (gpt2) {
      LADD("attn_norm.bias", 1, E, 1);
      LADD("attn_qkv.weight", 2, E, 3 * E);
      LADD("attn_qkv.bias", 1, 3 * E, 1);
      LADD("attn_output.weight", 2, E, E);
      LADD("attn_output.bias", 1, E, 1);
      LADD("ffn_norm.weight", 1, E, 1);
      LADD("ffn_norm.bias", 1, E, 1);
      LADD("ffn_up.weight", 2, E, F);
      LADD("ffn_up.bias", 1, F, 1);
      LADD("ffn_down.weight", 2, F, E);
      LADD("ffn_down.bias", 1, E, 1);
      continue;
    }
    LADD("attn_q.weight", 2, E, Q);
    LADD("attn_k.weight", 2, E, KV);
    LADD("attn_v.weight", 2, E, KV);
    if (hp->arch == QLM_ARCH_QWEN2) {
      LADD("attn_q.bias", 1, Q, 1);
      LADD("attn_k.bias", 1, KV, 1);
      LADD("attn_v.bias", 1, KV, 1);
    }
    LADD("attn_output.weight", 2, Q, E);
    LADD("ffn_norm.weight", 1, E, 1);
    LADD("ffn_gate.weight", 2, E, F);
    LADD("ffn_up.weight", 2, E, F);
    LADD("ffn_down.weight", 2, F, E);
#undef LADD
  }
  ADD("output_norm.weight", 1, E, 1);
  if (gpt2) ADD("output_norm.bias", 1, E, 1);
  if (!hp->tied_embeddings) ADD("output.weight", 2, E, V);
#undef ADD
  return QLM_OK;
}

static int cmp_expect(const void *a, const void *b) {
  return strcmp((*(expect *const *)a)->name, (*(expect *const *)b)->name);
}

static int expect_index(expect_list *l, qlm_error *err) {
  l->by_name = qlm_malloc((size_t)l->n * sizeof *l->by_name, "tensor name index", err);
  if (!l->by_name) return QLM_ENOMEM;
  for (int i = 0; i < l->n; i++) l->by_name[i] = &l->e[i];
  qsort(l->by_name, (size_t)l->n, sizeof *l->by_name, cmp_expect);
  return QLM_OK;
}

static expect *expect_find(expect_list *l, const char *name) {
  if (strlen(name) >= sizeof(((expect *)0)->name)) return NULL;
  expect key, *kp = &key;
  snprintf(key.name, sizeof key.name, "%s", name);
  expect **hit = bsearch(&kp, l->by_name, (size_t)l->n, sizeof kp, cmp_expect);
  return hit ? *hit : NULL;
}

static void shape_str(char *buf, size_t cap, int n_dims, const int64_t *ne) {
  int k = snprintf(buf, cap, "[");
  for (int i = 0; i < n_dims && k > 0 && (size_t)k < cap; i++)
    k += snprintf(buf + k, cap - (size_t)k, "%s%lld", i ? ", " : "", (long long)ne[i]);
  if (k > 0 && (size_t)k < cap) snprintf(buf + k, cap - (size_t)k, "]");
}

/* Canonical ne of a safetensors tensor: reversed row-major shape; for Conv1D weights
 * ([in, out] stored) the transposed data has ne = [in, out]. */
static void canonical_ne(const qlm_st_tensor *t, bool conv1d, int64_t ne[4]) {
  for (int i = 0; i < 4; i++) ne[i] = 1;
  for (int i = 0; i < t->n_dims; i++) ne[i] = conv1d ? t->shape[i] : t->shape[t->n_dims - 1 - i];
}

/* Assign each file tensor to its expected slot, checking shapes; reject strays and gaps. */
static int match_tensors(const char *dir, const qlm_st_set *st, const qlm_hparams *hp, expect_list *l,
                         qlm_error *err) {
  for (int i = 0; i < st->n_tensors; i++) {
    const qlm_st_tensor *t = &st->tensors[i];
    char canon[96];
    bool conv1d;
    int r = map_name(hp->arch, t->name, canon, sizeof canon, &conv1d);
    if (r == MAP_SKIP) continue;
    if (r == MAP_OK && hp->tied_embeddings && strcmp(canon, "output.weight") == 0) continue; /* tied: same data */
    expect *x = r == MAP_OK ? expect_find(l, canon) : NULL;
    if (!x)
      return qlm_fail(err, QLM_EUNSUPPORTED, "%s: tensor '%s' is not part of a %s model with %d layers", st->paths[t->file],
                      t->name, hp->arch == QLM_ARCH_GPT2 ? "gpt2" : hp->arch == QLM_ARCH_QWEN2 ? "qwen2" : "llama",
                      hp->n_layer);
    if (t->type < 0)
      return qlm_fail(err, QLM_EUNSUPPORTED, "%s: tensor '%s': dtype %s is not supported (F32, F16, BF16 are)",
                      st->paths[t->file], t->name, t->dtype);
    int64_t ne[4];
    canonical_ne(t, conv1d, ne);
    bool ok = t->n_dims == x->n_dims && ne[0] == x->ne[0] && (x->n_dims < 2 || ne[1] == x->ne[1]);
    if (!ok) {
      char want[64], got[96];
      int64_t rw[2] = {x->n_dims == 2 ? x->ne[1] : x->ne[0], x->ne[0]}; /* expected, row-major as stored */
      if (conv1d) rw[0] = x->ne[0], rw[1] = x->ne[1];
      shape_str(want, sizeof want, x->n_dims, rw);
      shape_str(got, sizeof got, t->n_dims, t->shape);
      return qlm_fail(err, QLM_EFORMAT, "%s: tensor '%s' (%s): shape %s, expected %s from config.json",
                      st->paths[t->file], t->name, canon, got, want);
    }
    x->st = t;
    x->conv1d = conv1d;
  }
  for (int i = 0; i < l->n; i++)
    if (!l->e[i].st) return qlm_fail(err, QLM_EFORMAT, "%s: tensor '%s' is missing from the safetensors files", dir, l->e[i].name);
  return QLM_OK;
}

/* [in, out] row-major -> [out, in] row-major, element size es (2 or 4). */
static void transpose(const void *src, void *dst, int64_t in, int64_t out, size_t es) {
  const unsigned char *s = src;
  unsigned char *d = dst;
  for (int64_t o = 0; o < out; o++)
    for (int64_t i = 0; i < in; i++) memcpy(d + ((size_t)(o * in + i)) * es, s + ((size_t)(i * out + o)) * es, es);
}

/* The transposed copies add_tensors will make (GPT-2 Conv1D weights), added up and checked against
 * the memory available (core/memlimit.h) before any is made; the message names the largest. */
static int check_transposes(const char *dir, const qlm_st_set *st, const expect_list *l, qlm_error *err) {
  uint64_t total = 0;
  int n = 0;
  const expect *largest = NULL;
  for (int i = 0; i < l->n; i++) {
    if (!l->e[i].conv1d) continue;
    total += l->e[i].st->nbytes;
    n++;
    if (!largest || l->e[i].st->nbytes > largest->st->nbytes) largest = &l->e[i];
  }
  if (!n) return QLM_OK;
  char what[64], detail[400], h[32];
  snprintf(what, sizeof what, "%d GPT-2 Conv1D weight%s transposed", n, n == 1 ? "" : "s");
  snprintf(detail, sizeof detail, "(largest '%.120s' in %.200s, %s)", largest->st->name, st->paths[largest->st->file],
           qlm_mem_human(largest->st->nbytes, h, sizeof h));
  qlm_mem_part part = {what, total, detail};
  return qlm_mem_check(dir, &part, 1, "free memory or convert the model to GGUF", err);
}

static int add_tensors(qlm_source *src, hf_priv *h, const expect_list *l, qlm_error *err) {
  int rc = check_transposes(src->path, &h->st, l, err);
  if (rc) return rc;
  for (int i = 0; i < l->n; i++) {
    const expect *x = &l->e[i];
    const qlm_st_tensor *t = x->st;
    int64_t ne[4];
    canonical_ne(t, x->conv1d, ne);
    const void *data = t->data;
    if (x->conv1d) {
      void **o = realloc(h->owned, (size_t)(h->n_owned + 1) * sizeof *o);
      if (!o) return qlm_fail(err, QLM_ENOMEM, "out of memory");
      h->owned = o;
      void *buf = qlm_malloc(t->nbytes, x->name, err);
      if (!buf) return QLM_ENOMEM;
      h->owned[h->n_owned++] = buf;
      transpose(t->data, buf, ne[0], ne[1], t->type == QLM_TYPE_F32 ? 4 : 2);
      data = buf;
    }
    if (!qlm_source_add_tensor(src, x->name, t->type, x->n_dims, ne, data, t->nbytes, err))
      return err ? err->code : QLM_ENOMEM;
  }
  return QLM_OK;
}

/* ---- tokenizer ------------------------------------------------------------------------- */

/* bos/eos ids from generation_config.json (falling back to config.json), when they name tokens. */
static void apply_special_ids(const cJSON *cfg, const cJSON *gen, qlm_vocab *v) {
  static const char *keys[2] = {"bos_token_id", "eos_token_id"};
  int *dst[2] = {&v->bos_id, &v->eos_id};
  for (int k = 0; k < 2; k++) {
    const cJSON *j = gen ? cJSON_GetObjectItemCaseSensitive(gen, keys[k]) : NULL;
    if (!j || cJSON_IsNull(j)) j = cJSON_GetObjectItemCaseSensitive(cfg, keys[k]);
    if (cJSON_IsArray(j)) j = cJSON_GetArrayItem(j, 0); /* several eos ids: the first is the main one */
    if (cJSON_IsNumber(j) && j->valuedouble >= 0 && j->valuedouble < v->n_tokens &&
        j->valuedouble == floor(j->valuedouble))
      *dst[k] = (int)j->valuedouble;
  }
}

static bool is_file(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* tokenizer.json (the given one, else the folder's), then special ids: config.json and
 * generation_config.json first, tokenizer_config.json (beside tokenizer.json) last, the
 * precedence llama.cpp's converter uses.  No tokenizer.json: the vocab stays empty. */
static int load_tokenizer(const char *dir, const char *tokenizer_json, const cJSON *cfg, qlm_source *src,
                          qlm_error *err) {
  char *tok = NULL, *gen_path = NULL, *tcfg = NULL;
  cJSON *gen = NULL;
  int rc = QLM_OK;
  if (tokenizer_json) tok = strdup(tokenizer_json);
  else if (asprintf(&tok, "%s/tokenizer.json", dir) < 0) tok = NULL;
  if (!tok || asprintf(&gen_path, "%s/generation_config.json", dir) < 0) {
    free(tok);
    return qlm_fail(err, QLM_ENOMEM, "out of memory");
  }
  if (!tokenizer_json && !is_file(tok)) goto done; /* a folder without a tokenizer loads with an empty vocab */
  if ((rc = qlm_vocab_from_tokenizer_json(tok, &src->vocab, err))) goto done;
  if (src->vocab.n_tokens > src->hp.n_vocab) {
    rc = qlm_fail(err, QLM_EFORMAT, "%s: %d tokens, more than the model's vocab_size %d", tok, src->vocab.n_tokens,
                  src->hp.n_vocab);
    goto done;
  }
  if (is_file(gen_path) && (rc = load_json(gen_path, &gen, err))) goto done;
  apply_special_ids(cfg, gen, &src->vocab);
  const char *slash = strrchr(tok, '/');
  if (asprintf(&tcfg, "%.*s/tokenizer_config.json", slash ? (int)(slash - tok) : 1, slash ? tok : ".") < 0) {
    tcfg = NULL;
    rc = qlm_fail(err, QLM_ENOMEM, "out of memory");
    goto done;
  }
  if (is_file(tcfg)) rc = qlm_vocab_apply_tokenizer_config(tcfg, &src->vocab, err);
done:
  cJSON_Delete(gen);
  free(tok);
  free(gen_path);
  free(tcfg);
  return rc;
}

/* ---- entry point ----------------------------------------------------------------------- */

static int hf_load(const char *dir, const char *tokenizer_json, qlm_source *src, hf_priv *h, qlm_error *err) {
  char *cfg_path = NULL;
  cJSON *cfg = NULL;
  expect_list l = {0};
  if (asprintf(&cfg_path, "%s/config.json", dir) < 0) return qlm_fail(err, QLM_ENOMEM, "out of memory");
  int rc = load_json(cfg_path, &cfg, err);
  if (rc) goto done;
  qlm_hparams *hp = &src->hp;
  if ((rc = parse_arch(cfg_path, cfg, &hp->arch, err))) goto done;
  rc = hp->arch == QLM_ARCH_GPT2 ? parse_gpt2_hparams(cfg_path, cfg, hp, err) : parse_llama_hparams(cfg_path, cfg, hp, err);
  if (rc) goto done;
  bool tie = false;
  if ((rc = cfg_bool(cfg_path, cfg, "tie_word_embeddings", hp->arch == QLM_ARCH_GPT2, &tie, err))) goto done;
  if ((rc = qlm_st_open_dir(&h->st, dir, err))) goto done;
  /* a checkpoint without lm_head can only mean tied embeddings */
  hp->tied_embeddings = tie || !qlm_st_find(&h->st, "lm_head.weight");
  rc = build_expected(hp, &l, err);
  if (!rc) rc = expect_index(&l, err);
  if (!rc) rc = match_tensors(dir, &h->st, hp, &l, err);
  if (!rc) rc = add_tensors(src, h, &l, err);
  if (!rc) rc = add_config_meta(src, cfg, err);
  if (!rc) rc = load_tokenizer(dir, tokenizer_json, cfg, src, err);
done:
  free(l.e);
  free(l.by_name);
  cJSON_Delete(cfg);
  free(cfg_path);
  return rc;
}

int qlm_hf_open(const char *dir, const char *tokenizer_json, qlm_source **out, qlm_error *err) {
  *out = NULL;
  qlm_source *src = qlm_source_new(dir, "hf", err);
  if (!src) return QLM_ENOMEM;
  hf_priv *h = qlm_calloc(1, sizeof *h, "hf reader state", err);
  if (!h) {
    qlm_source_close(src);
    return QLM_ENOMEM;
  }
  src->priv = h;
  src->free_priv = hf_free_priv;
  int rc = hf_load(dir, tokenizer_json, src, h, err);
  if (rc) {
    qlm_source_close(src);
    return rc;
  }
  *out = src;
  return QLM_OK;
}
