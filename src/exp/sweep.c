/* sweep.c — the sweep config (JSON, read with cJSON): parsing, checking, expansion into jobs, and
 * the command lines of the child processes. Running them is sweep_run.c. */
#include "core/shared_dir.h"
#include "exp/sweep.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/mapfile.h"
#include "quant/method.h"

enum { CONFIG_MAX_BYTES = 4 << 20, MAX_MODELS = 256, MAX_QUANTS = 1024, MAX_TASKS = 1024, MAX_REPS = 1000 };

/* ---- small helpers ---- */

int qlm_sweep_args_push(qlm_sweep_args *a, const char *s, qlm_error *err) {
  if (a->n == a->cap) {
    int nc = a->cap ? 2 * a->cap : 8;
    char **p = nc > 4096 ? NULL : realloc(a->v, (size_t)nc * sizeof *p);
    if (!p) return qlm_fail(err, QLM_ENOMEM, "sweep: out of memory (argument list)");
    a->v = p, a->cap = nc;
  }
  if (!(a->v[a->n] = strdup(s))) return qlm_fail(err, QLM_ENOMEM, "sweep: out of memory (argument '%s')", s);
  a->n++;
  return QLM_OK;
}

void qlm_sweep_args_free(qlm_sweep_args *a) {
  for (int i = 0; i < a->n; i++) free(a->v[i]);
  free(a->v);
  *a = (qlm_sweep_args){0};
}

static int push2(qlm_sweep_args *a, const char *opt, const char *val, qlm_error *err) {
  return qlm_sweep_args_push(a, opt, err) || qlm_sweep_args_push(a, val, err);
}

int qlm_sweep_set(char **field, const char *s, qlm_error *err) {
  char *c = s ? strdup(s) : NULL;
  if (s && !c) return qlm_fail(err, QLM_ENOMEM, "sweep: out of memory");
  free(*field);
  *field = c;
  return QLM_OK;
}

/* Key parts are file names too: keep [A-Za-z0-9._+=-], replace the rest by '_'. */
static void sanitize(char *s) {
  for (; *s; s++)
    if (!isalnum((unsigned char)*s) && !strchr("._+=-", *s)) *s = '_';
}

/* Append printf text to a fixed key buffer; fails when the key would not fit. */
static int key_add(char *key, const char *file, const char *where, qlm_error *err, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int key_add(char *key, const char *file, const char *where, qlm_error *err, const char *fmt, ...) {
  size_t n = strlen(key);
  va_list ap;
  va_start(ap, fmt);
  int w = vsnprintf(key + n, QLM_SWEEP_KEY_MAX - n, fmt, ap);
  va_end(ap);
  if (w < 0 || (size_t)w >= QLM_SWEEP_KEY_MAX - n)
    return qlm_fail(err, QLM_ELIMIT, "%s: %s: the cell key '%s...' is longer than %d characters (give a shorter \"name\")",
                    file, where, key, QLM_SWEEP_KEY_MAX - 1);
  sanitize(key + n);
  return QLM_OK;
}

/* FNV-1a, for short key parts standing for long text (rules, calibration file). */
static uint32_t fnv1a(const char *s) {
  uint32_t h = 2166136261u;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
  return h;
}

/* A number as the shortest text that reads back the same ("4", "3.5"). */
static void num_text(double v, char *buf, size_t n) { snprintf(buf, n, "%.15g", v); }

/* ---- parse context ---- */

typedef struct pctx {
  const char *file;
  qlm_error *err;
} pctx;

static int perr(pctx *c, const char *where, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int perr(pctx *c, const char *where, const char *fmt, ...) {
  char msg[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return qlm_fail(c->err, QLM_EFORMAT, "%s: %s: %s", c->file, where, msg);
}

static const char *jtype(const cJSON *j) {
  return cJSON_IsString(j) ? "a string" : cJSON_IsNumber(j) ? "a number" : cJSON_IsBool(j) ? "a boolean"
         : cJSON_IsArray(j) ? "an array" : cJSON_IsObject(j) ? "an object" : "null";
}

/* Every key of object o must be in the NULL-terminated list (catches typos like "protcol"). */
static int check_keys(pctx *c, const char *where, const cJSON *o, const char *const *known) {
  for (const cJSON *it = o->child; it; it = it->next) {
    int ok = 0;
    for (int k = 0; known[k] && !ok; k++) ok = !strcmp(it->string, known[k]);
    if (ok) continue;
    char list[512] = "";
    for (int k = 0; known[k]; k++) {
      size_t l = strlen(list);
      snprintf(list + l, sizeof list - l, "%s%s", k ? ", " : "", known[k]);
    }
    return perr(c, where, "unknown key \"%s\" (known: %s)", it->string, list);
  }
  return QLM_OK;
}

/* Expand ~ at the start and $NAME / ${NAME} anywhere. An unset $QLM_SHARED means the shared folder
 * qlm finds by itself (core/shared_dir.h), as the CLI's default paths do; any other unset
 * variable is an error. */
static int expand_path(pctx *c, const char *where, const char *in, char **out) {
  size_t cap = strlen(in) + 1, n = 0;
  char *s = malloc(cap);
  if (!s) return qlm_fail(c->err, QLM_ENOMEM, "%s: %s: out of memory", c->file, where);
  const char *p = in;
  for (;;) {
    const char *val = NULL;
    size_t skip = 1, vlen = 0;
    char name[128];
    if (p == in && p[0] == '~' && (p[1] == '/' || !p[1])) {
      val = getenv("HOME");
      if (!val) {
        free(s);
        return perr(c, where, "'%s' starts with ~ but $HOME is not set", in);
      }
    } else if (p[0] == '$') {
      int brace = p[1] == '{';
      const char *b = p + 1 + brace, *e = b;
      while (isalnum((unsigned char)*e) || *e == '_') e++;
      if (e == b || (size_t)(e - b) >= sizeof name || (brace && *e != '}')) {
        free(s);
        return perr(c, where, "'%s': bad variable reference at '%s' (write $NAME or ${NAME})", in, p);
      }
      memcpy(name, b, (size_t)(e - b));
      name[e - b] = 0;
      skip = (size_t)(e - p) + brace;
      val = getenv(name);
      if ((!val || !*val) && !strcmp(name, "QLM_SHARED")) val = qlm_shared_dir();
      if (!val) {
        free(s);
        return perr(c, where, "'%s' uses $%s, which is not set", in, name);
      }
    } else if (!*p) {
      s[n] = 0;
      *out = s;
      return QLM_OK;
    }
    const char *add = val ? val : p;
    vlen = val ? strlen(val) : 1;
    if (n + vlen + 1 > cap) {
      size_t nc = 2 * (n + vlen + 1);
      char *t = nc > (1u << 20) ? NULL : realloc(s, nc);
      if (!t) {
        free(s);
        return perr(c, where, "'%s': expanded path too long", in);
      }
      s = t, cap = nc;
    }
    memcpy(s + n, add, vlen);
    n += vlen;
    p += skip;
  }
}

/* A value that may be a scalar or an array of scalars: visit each element. */
static int n_values(const cJSON *j) { return cJSON_IsArray(j) ? cJSON_GetArraySize(j) : j ? 1 : 0; }
static const cJSON *value_at(const cJSON *j, int i) { return cJSON_IsArray(j) ? cJSON_GetArrayItem(j, i) : j; }

static int get_string(pctx *c, const char *where, const cJSON *j, const char **out) {
  if (!cJSON_IsString(j) || !j->valuestring[0]) return perr(c, where, "expected a non-empty string, got %s", jtype(j));
  *out = j->valuestring;
  return QLM_OK;
}

static int get_long(pctx *c, const char *where, const cJSON *j, long lo, long hi, long *out) {
  if (!cJSON_IsNumber(j)) return perr(c, where, "expected an integer, got %s", jtype(j));
  double v = j->valuedouble;
  if (v != floor(v) || v < (double)lo || v > (double)hi)
    return perr(c, where, "%g is not an integer in [%ld, %ld]", v, lo, hi);
  *out = (long)v;
  return QLM_OK;
}

static int get_double(pctx *c, const char *where, const cJSON *j, double lo, double hi, double *out) {
  if (!cJSON_IsNumber(j) || !isfinite(j->valuedouble)) return perr(c, where, "expected a number, got %s", jtype(j));
  if (j->valuedouble < lo || j->valuedouble > hi) return perr(c, where, "%g is out of range [%g, %g]", j->valuedouble, lo, hi);
  *out = j->valuedouble;
  return QLM_OK;
}

static int get_bool(pctx *c, const char *where, const cJSON *j, int *out) {
  if (!cJSON_IsBool(j)) return perr(c, where, "expected true or false, got %s", jtype(j));
  *out = cJSON_IsTrue(j);
  return QLM_OK;
}

/* "args": extra options, appended as given (a string array). */
static int get_args(pctx *c, const char *where, const cJSON *j, qlm_sweep_args *a) {
  if (!cJSON_IsArray(j)) return perr(c, where, "expected an array of strings, got %s", jtype(j));
  int n = cJSON_GetArraySize(j);
  for (int i = 0; i < n; i++) {
    const cJSON *e = cJSON_GetArrayItem(j, i);
    if (!cJSON_IsString(e)) return perr(c, where, "element %d: expected a string, got %s", i, jtype(e));
    if (!strcmp(e->valuestring, "--db") || !strncmp(e->valuestring, "--db=", 5))
      return perr(c, where, "--db is set by the sweep (\"db\" or qlm sweep --db)");
    if (qlm_sweep_args_push(a, e->valuestring, c->err)) return c->err->code;
  }
  return QLM_OK;
}

static char *where_fmt(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static char *where_fmt(char *buf, size_t n, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, n, fmt, ap);
  va_end(ap);
  return buf;
}

/* ---- models ---- */

static int parse_models(pctx *c, const cJSON *j, qlm_sweep_config *cfg) {
  if (!cJSON_IsArray(j) || cJSON_GetArraySize(j) == 0)
    return perr(c, "models", "expected a non-empty array of model paths or {\"name\", \"path\"} objects, got %s",
                j ? jtype(j) : "nothing (the key is required)");
  int n = cJSON_GetArraySize(j);
  if (n > MAX_MODELS) return perr(c, "models", "%d models (at most %d)", n, MAX_MODELS);
  if (!(cfg->models = qlm_calloc((size_t)n, sizeof *cfg->models, "sweep models", c->err))) return c->err->code;
  char w[96];
  for (int i = 0; i < n; i++) {
    const cJSON *e = cJSON_GetArrayItem(j, i);
    qlm_sweep_model *m = &cfg->models[cfg->n_models++];
    const char *path = NULL, *name = NULL;
    if (cJSON_IsObject(e)) {
      static const char *const known[] = {"path", "name", NULL};
      if (check_keys(c, where_fmt(w, sizeof w, "models[%d]", i), e, known) ||
          get_string(c, where_fmt(w, sizeof w, "models[%d].path", i), cJSON_GetObjectItemCaseSensitive(e, "path"), &path))
        return c->err->code;
      const cJSON *nm = cJSON_GetObjectItemCaseSensitive(e, "name");
      if (nm && get_string(c, where_fmt(w, sizeof w, "models[%d].name", i), nm, &name)) return c->err->code;
    } else if (get_string(c, where_fmt(w, sizeof w, "models[%d]", i), e, &path))
      return c->err->code;
    if (expand_path(c, where_fmt(w, sizeof w, "models[%d].path", i), path, &m->path)) return c->err->code;
    if (!name) { /* the file (or folder) name without its extension */
      const char *b = strrchr(m->path, '/');
      size_t l = strlen(m->path);
      while (l > 1 && m->path[l - 1] == '/') l--; /* a folder given as "dir/" */
      b = m->path;
      for (size_t k = 0; k + 1 < l; k++)
        if (m->path[k] == '/') b = m->path + k + 1;
      snprintf(m->name, sizeof m->name, "%.*s", (int)(m->path + l - b), b);
      char *dot = strrchr(m->name, '.');
      if (dot && dot != m->name) *dot = 0;
    } else
      snprintf(m->name, sizeof m->name, "%s", name);
    sanitize(m->name);
    if (!m->name[0] || m->name[0] == '.') /* it names a folder of the work dir */
      return perr(c, where_fmt(w, sizeof w, "models[%d]", i), "name '%s' is empty or starts with '.' (give a \"name\")",
                  m->name);
    for (int k = 0; k < i; k++)
      if (!strcmp(cfg->models[k].name, m->name))
        return perr(c, where_fmt(w, sizeof w, "models[%d]", i), "name '%s' is also models[%d]'s (give each a \"name\")",
                    m->name, k);
  }
  return QLM_OK;
}

/* ---- quantization configs ---- */

static const char *const quant_keys[] = {"name", "method", "bits", "group", "type", "dq", "threshold", "opt", "rules",
                                         "rules_file", "calib", "calib_samples", "calib_len", "seed", "keep_embeddings",
                                         "target_bpw", "args", NULL};

/* One expanded quant config: method m (or type t), bits b (NaN = not given), group g (NULL). */
static int add_quant(pctx *c, const char *where, const cJSON *e, qlm_sweep_config *cfg, const char *m, const char *t,
                     double b, const cJSON *g, const char *name) {
  if (cfg->n_quants == MAX_QUANTS) return perr(c, where, "more than %d quantization configs", MAX_QUANTS);
  qlm_sweep_quant *q = &cfg->quants[cfg->n_quants++];
  qlm_error *err = c->err;
  char nb[64], w[128];
  if (m && (!strcmp(m, "fp32") || !strcmp(m, "base"))) {
    if (cJSON_GetArraySize(e) > 1 + (name != NULL))
      return perr(c, where, "method \"%s\" means no quantization: it takes no other key", m);
    q->kind = !strcmp(m, "fp32") ? QLM_SWEEP_FP32 : QLM_SWEEP_BASE;
    snprintf(q->method, sizeof q->method, "%s", m);
    snprintf(q->key, sizeof q->key, "%s", name ? name : m);
    sanitize(q->key);
    return QLM_OK;
  }
  q->kind = QLM_SWEEP_QUANT;
  q->calib_samples = 128, q->calib_len = 2048;
  if (t) {
    if (push2(&q->args, "--type", t, err) || key_add(q->key, c->file, where, err, "%s", t)) return err->code;
    snprintf(q->method, sizeof q->method, "%s", t);
  } else {
    const qlm_quant_method *qm = qlm_quant_method_find(m);
    if (!qm) return perr(c, where_fmt(w, sizeof w, "%s.method", where), "unknown method '%s' (qlm quantize --help lists them; "
                         "fp32 and base mean no quantization)", m);
    q->calibrated = qm->needs_calib;
    snprintf(q->method, sizeof q->method, "%s", m);
    if (push2(&q->args, "--method", m, err) || key_add(q->key, c->file, where, err, "%s", m)) return err->code;
  }
  if (!isnan(b)) {
    num_text(b, nb, sizeof nb);
    if (push2(&q->args, "--bits", nb, err) || key_add(q->key, c->file, where, err, "-b%s", nb)) return err->code;
  }
  if (g) {
    long gv = 0;
    const char *gs = NULL;
    if (cJSON_IsString(g) && (!strcmp(g->valuestring, "channel") || !strcmp(g->valuestring, "tensor")))
      gs = g->valuestring;
    else if (get_long(c, where_fmt(w, sizeof w, "%s.group", where), g, 1, 1 << 20, &gv))
      return perr(c, w, "expected a group size (integer), \"channel\" or \"tensor\", got %s", jtype(g));
    if (!gs) snprintf(nb, sizeof nb, "%ld", gv), gs = nb;
    if (push2(&q->args, "--group", gs, err) || key_add(q->key, c->file, where, err, "-g%s", gs)) return err->code;
  }
  const cJSON *j;
  int flag = 0;
  if ((j = cJSON_GetObjectItemCaseSensitive(e, "dq"))) {
    if (get_bool(c, where_fmt(w, sizeof w, "%s.dq", where), j, &flag)) return err->code;
    if (flag && (qlm_sweep_args_push(&q->args, "--dq", err) || key_add(q->key, c->file, where, err, "-dq"))) return err->code;
  }
  double d = 0;
  if ((j = cJSON_GetObjectItemCaseSensitive(e, "threshold"))) {
    if (get_double(c, where_fmt(w, sizeof w, "%s.threshold", where), j, 0, 1e6, &d)) return err->code;
    num_text(d, nb, sizeof nb);
    if (push2(&q->args, "--threshold", nb, err) || key_add(q->key, c->file, where, err, "-t%s", nb)) return err->code;
  }
  if ((j = cJSON_GetObjectItemCaseSensitive(e, "target_bpw"))) {
    if (get_double(c, where_fmt(w, sizeof w, "%s.target_bpw", where), j, 1, 32, &d)) return err->code;
    num_text(d, nb, sizeof nb);
    q->calibrated = 1;
    if (push2(&q->args, "--target-bpw", nb, err) || key_add(q->key, c->file, where, err, "-bpw%s", nb)) return err->code;
  }
  if ((j = cJSON_GetObjectItemCaseSensitive(e, "opt"))) { /* "k=v" or ["k=v", ...] */
    for (int i = 0; i < n_values(j); i++) {
      const char *s = NULL;
      if (get_string(c, where_fmt(w, sizeof w, "%s.opt", where), value_at(j, i), &s)) return err->code;
      if (!strchr(s, '=')) return perr(c, w, "'%s' is not KEY=VALUE", s);
      if (push2(&q->args, "--opt", s, err) || key_add(q->key, c->file, where, err, "-%s", s)) return err->code;
    }
  }
  if ((j = cJSON_GetObjectItemCaseSensitive(e, "keep_embeddings"))) {
    const char *s = NULL;
    if (get_string(c, where_fmt(w, sizeof w, "%s.keep_embeddings", where), j, &s) ||
        push2(&q->args, "--keep-embeddings", s, err) || key_add(q->key, c->file, where, err, "-e%s", s))
      return err->code;
  }
  uint32_t rules_hash = 0;
  if ((j = cJSON_GetObjectItemCaseSensitive(e, "rules"))) { /* --rule lines; the key gets a hash of them */
    for (int i = 0; i < n_values(j); i++) {
      const char *s = NULL;
      if (get_string(c, where_fmt(w, sizeof w, "%s.rules", where), value_at(j, i), &s) || push2(&q->args, "--rule", s, err))
        return err->code;
      rules_hash = rules_hash * 31u + fnv1a(s);
    }
  }
  if ((j = cJSON_GetObjectItemCaseSensitive(e, "rules_file"))) {
    const char *s = NULL;
    char *p = NULL;
    if (get_string(c, where_fmt(w, sizeof w, "%s.rules_file", where), j, &s) || expand_path(c, w, s, &p)) return err->code;
    int rc = push2(&q->args, "--rules", p, err);
    rules_hash = rules_hash * 31u + fnv1a(p);
    free(p);
    if (rc) return rc;
  }
  if (rules_hash && key_add(q->key, c->file, where, err, "-r%08x", (unsigned)rules_hash)) return err->code;
  if ((j = cJSON_GetObjectItemCaseSensitive(e, "calib"))) {
    const char *s = NULL;
    char *p = NULL;
    if (get_string(c, where_fmt(w, sizeof w, "%s.calib", where), j, &s) || expand_path(c, w, s, &p)) return err->code;
    int rc = push2(&q->args, "--calib", p, err) || key_add(q->key, c->file, where, err, "-c%08x", (unsigned)fnv1a(p));
    free(p);
    if (rc) return err->code;
  }
  static const struct { const char *key, *opt, *tag; long lo, hi; } nums[] = {
      {"calib_samples", "--calib-samples", "-cs", 1, 1 << 20}, {"calib_len", "--calib-len", "-cl", 2, 1 << 20},
      {"seed", "--seed", "-s", 0, 1L << 40}};
  for (size_t k = 0; k < sizeof nums / sizeof *nums; k++) {
    long v = 0;
    if (!(j = cJSON_GetObjectItemCaseSensitive(e, nums[k].key))) continue;
    if (get_long(c, where_fmt(w, sizeof w, "%s.%s", where, nums[k].key), j, nums[k].lo, nums[k].hi, &v)) return err->code;
    if (k == 0) q->calib_samples = v;
    if (k == 1) q->calib_len = v;
    snprintf(nb, sizeof nb, "%ld", v);
    if (push2(&q->args, nums[k].opt, nb, err) || key_add(q->key, c->file, where, err, "%s%s", nums[k].tag, nb))
      return err->code;
  }
  if ((j = cJSON_GetObjectItemCaseSensitive(e, "args"))) {
    if (get_args(c, where_fmt(w, sizeof w, "%s.args", where), j, &q->args)) return err->code;
    uint32_t h = 0;
    for (const cJSON *a = j->child; a; a = a->next) h = h * 31u + fnv1a(a->valuestring);
    if (j->child && key_add(q->key, c->file, where, err, "-a%08x", (unsigned)h)) return err->code;
  }
  if (name) {
    snprintf(q->key, sizeof q->key, "%s", name);
    sanitize(q->key);
  }
  return QLM_OK;
}

static int parse_quants(pctx *c, const cJSON *j, qlm_sweep_config *cfg) {
  if (!cJSON_IsArray(j) || cJSON_GetArraySize(j) == 0)
    return perr(c, "quant", "expected a non-empty array of quantization configs ({\"method\": \"fp32\"}, "
                "{\"method\": \"absmax\", \"bits\": [8, 4]}, ...), got %s", j ? jtype(j) : "nothing (the key is required)");
  if (!(cfg->quants = qlm_calloc(MAX_QUANTS, sizeof *cfg->quants, "sweep quant configs", c->err))) return c->err->code;
  char w[64], w2[96];
  for (int i = 0; i < cJSON_GetArraySize(j); i++) {
    const cJSON *e = cJSON_GetArrayItem(j, i);
    where_fmt(w, sizeof w, "quant[%d]", i);
    if (cJSON_IsString(e)) { /* shorthand: "fp32", "nf4", "q4_K" as a method */
      cJSON *o = cJSON_CreateObject();
      if (!o || !cJSON_AddStringToObject(o, "method", e->valuestring)) {
        cJSON_Delete(o);
        return qlm_fail(c->err, QLM_ENOMEM, "%s: out of memory", c->file);
      }
      int rc = add_quant(c, w, o, cfg, e->valuestring, NULL, NAN, NULL, NULL);
      cJSON_Delete(o);
      if (rc) return rc;
      continue;
    }
    if (!cJSON_IsObject(e)) return perr(c, w, "expected an object or a method name, got %s", jtype(e));
    if (check_keys(c, w, e, quant_keys)) return c->err->code;
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "method"), *t = cJSON_GetObjectItemCaseSensitive(e, "type"),
                *b = cJSON_GetObjectItemCaseSensitive(e, "bits"), *g = cJSON_GetObjectItemCaseSensitive(e, "group"),
                *nm = cJSON_GetObjectItemCaseSensitive(e, "name");
    if (!m == !t) return perr(c, w, "give exactly one of \"method\" and \"type\" (a llama.cpp type such as q4_K)");
    const cJSON *mt = m ? m : t;
    int nmt = n_values(mt), nb = b ? n_values(b) : 1, ng = g ? n_values(g) : 1;
    if (!nmt || !nb || !ng) return perr(c, w, "an empty array of methods, types, bits or groups");
    const char *name = NULL;
    if (nm && get_string(c, where_fmt(w2, sizeof w2, "%s.name", w), nm, &name)) return c->err->code;
    if (name && nmt * nb * ng > 1)
      return perr(c, w, "\"name\" needs a single config, but this one expands to %d", nmt * nb * ng);
    for (int a = 0; a < nmt; a++)
      for (int k = 0; k < nb; k++)
        for (int l = 0; l < ng; l++) {
          const char *s = NULL;
          double bits = NAN;
          if (get_string(c, where_fmt(w2, sizeof w2, "%s.%s", w, m ? "method" : "type"), value_at(mt, a), &s)) return c->err->code;
          if (b && get_double(c, where_fmt(w2, sizeof w2, "%s.bits", w), value_at(b, k), 1, 32, &bits)) return c->err->code;
          if (add_quant(c, w, e, cfg, m ? s : NULL, m ? NULL : s, bits, g ? value_at(g, l) : NULL, name)) return c->err->code;
        }
  }
  for (int i = 0; i < cfg->n_quants; i++)
    for (int k = 0; k < i; k++)
      if (!strcmp(cfg->quants[i].key, cfg->quants[k].key))
        return perr(c, "quant", "two configs have the same key '%s' (a duplicate? give one a \"name\")", cfg->quants[i].key);
  return QLM_OK;
}

/* ---- tasks ---- */

static int opt_long(pctx *c, const char *w, const cJSON *e, const char *key, long lo, long hi, long *v, int *given) {
  char ww[128];
  const cJSON *j = cJSON_GetObjectItemCaseSensitive(e, key);
  *given = j != NULL;
  return j ? get_long(c, where_fmt(ww, sizeof ww, "%s.%s", w, key), j, lo, hi, v) : QLM_OK;
}

/* The options every task has: "data" (path), "args" (extra options). */
static int task_common(pctx *c, const char *w, const cJSON *e, qlm_sweep_task *t) {
  char ww[128];
  const cJSON *j;
  if ((j = cJSON_GetObjectItemCaseSensitive(e, "data"))) {
    const char *s = NULL;
    if (get_string(c, where_fmt(ww, sizeof ww, "%s.data", w), j, &s) || expand_path(c, ww, s, &t->data) ||
        push2(&t->args, "--data", t->data, c->err) ||
        key_add(t->key, c->file, w, c->err, "-d%08x", (unsigned)fnv1a(t->data)))
      return c->err->code;
  }
  if ((j = cJSON_GetObjectItemCaseSensitive(e, "args"))) {
    if (get_args(c, where_fmt(ww, sizeof ww, "%s.args", w), j, &t->args)) return c->err->code;
    uint32_t h = 0;
    for (const cJSON *a = j->child; a; a = a->next) h = h * 31u + fnv1a(a->valuestring);
    if (j->child && key_add(t->key, c->file, w, c->err, "-a%08x", (unsigned)h)) return c->err->code;
  }
  const cJSON *nm = cJSON_GetObjectItemCaseSensitive(e, "name");
  if (nm) {
    const char *s = NULL;
    if (get_string(c, where_fmt(ww, sizeof ww, "%s.name", w), nm, &s)) return c->err->code;
    snprintf(t->key, sizeof t->key, "%s", s);
    sanitize(t->key);
  }
  return QLM_OK;
}

static qlm_sweep_task *new_task(pctx *c, const char *w, qlm_sweep_config *cfg, int kind, const char *command) {
  if (cfg->n_tasks == MAX_TASKS) {
    perr(c, w, "more than %d task cells per quant config", MAX_TASKS);
    return NULL;
  }
  qlm_sweep_task *t = &cfg->tasks[cfg->n_tasks++];
  t->kind = kind, t->command = command, t->train = -1;
  return t;
}

static int add_num_opt(pctx *c, const char *w, qlm_sweep_task *t, const char *opt, const char *tag, long v) {
  char nb[32];
  snprintf(nb, sizeof nb, "%ld", v);
  return push2(&t->args, opt, nb, c->err) || key_add(t->key, c->file, w, c->err, "%s%ld", tag, v) ? c->err->code : QLM_OK;
}

static int parse_ppl(pctx *c, const char *w, const cJSON *e, qlm_sweep_config *cfg) {
  static const char *const known[] = {"task", "name", "protocol", "window", "stride", "chunks", "batch", "data", "args", NULL};
  if (check_keys(c, w, e, known)) return c->err->code;
  qlm_sweep_task *t = new_task(c, w, cfg, QLM_TASK_PPL, "ppl");
  if (!t) return c->err->code;
  const char *proto = "hf-window";
  char ww[128];
  const cJSON *j = cJSON_GetObjectItemCaseSensitive(e, "protocol");
  if (j && get_string(c, where_fmt(ww, sizeof ww, "%s.protocol", w), j, &proto)) return c->err->code;
  if (strcmp(proto, "hf-window") && strcmp(proto, "per-line") && strcmp(proto, "llamacpp") && strcmp(proto, "lm-eval"))
    return perr(c, ww, "unknown protocol '%s' (hf-window, per-line, llamacpp, lm-eval)", proto);
  if (push2(&t->args, "--protocol", proto, c->err) || key_add(t->key, c->file, w, c->err, "ppl-%s", proto)) return c->err->code;
  long v = 0;
  int given;
  static const struct { const char *key, *opt, *tag; long lo; } o[] = {
      {"window", "--window", "-w", 2}, {"stride", "--stride", "-s", 1}, {"chunks", "--chunks", "-c", 0}, {"batch", "--batch", "-b", 1}};
  for (size_t k = 0; k < sizeof o / sizeof *o; k++) {
    if (opt_long(c, w, e, o[k].key, o[k].lo, 1 << 24, &v, &given)) return c->err->code;
    if (!given) continue;
    if (k == 0) t->window = v;
    if (k == 2) t->chunks = v;
    if (add_num_opt(c, w, t, o[k].opt, o[k].tag, v)) return c->err->code;
  }
  return task_common(c, w, e, t);
}

/* classify: one cell per batch size; the head is trained once per model (cfg->trains). */
static int parse_classify(pctx *c, const char *w, const cJSON *e, const cJSON *batch_default, qlm_sweep_config *cfg) {
  static const char *const known[] = {"task", "name", "batch", "limit", "feature", "seed", "data", "args", NULL};
  if (check_keys(c, w, e, known)) return c->err->code;
  const cJSON *b = cJSON_GetObjectItemCaseSensitive(e, "batch");
  if (!b) b = batch_default;
  int nb = b ? n_values(b) : 1;
  if (nb == 0) return perr(c, w, "\"batch\" is an empty array");
  if (cJSON_GetObjectItemCaseSensitive(e, "name") && nb > 1)
    return perr(c, w, "\"name\" needs a single batch size (this task has %d)", nb);
  /* the training job of this task's settings (shared by tasks with equal settings) */
  qlm_sweep_train tr = {0};
  long limit = 0, seed = 0;
  int has_limit, has_seed;
  const char *feature = NULL;
  char ww[128];
  int rc;
  snprintf(tr.key, sizeof tr.key, "classify-train");
  if (opt_long(c, w, e, "limit", 1, 1 << 30, &limit, &has_limit) || opt_long(c, w, e, "seed", 0, 1L << 40, &seed, &has_seed))
    goto fail;
  const cJSON *f = cJSON_GetObjectItemCaseSensitive(e, "feature");
  if (f && get_string(c, where_fmt(ww, sizeof ww, "%s.feature", w), f, &feature)) goto fail;
  if (feature && strcmp(feature, "last") && strcmp(feature, "mean")) {
    perr(c, ww, "'%s' is not last or mean", feature);
    goto fail;
  }
  char nbuf[32];
  if (has_limit) {
    snprintf(nbuf, sizeof nbuf, "%ld", limit);
    if (push2(&tr.args, "--limit", nbuf, c->err) || key_add(tr.key, c->file, w, c->err, "-l%ld", limit)) goto fail;
  }
  if (feature && (push2(&tr.args, "--feature", feature, c->err) || key_add(tr.key, c->file, w, c->err, "-%s", feature)))
    goto fail;
  if (has_seed) {
    snprintf(nbuf, sizeof nbuf, "%ld", seed);
    if (push2(&tr.args, "--seed", nbuf, c->err) || key_add(tr.key, c->file, w, c->err, "-s%ld", seed)) goto fail;
  }
  const cJSON *d = cJSON_GetObjectItemCaseSensitive(e, "data");
  if (d) {
    const char *s = NULL;
    char *p = NULL;
    if (get_string(c, where_fmt(ww, sizeof ww, "%s.data", w), d, &s) || expand_path(c, ww, s, &p)) goto fail;
    rc = push2(&tr.args, "--data", p, c->err) || key_add(tr.key, c->file, w, c->err, "-d%08x", (unsigned)fnv1a(p));
    free(p);
    if (rc) goto fail;
  }
  tr.limit = limit;
  int ti = -1;
  for (int k = 0; k < cfg->n_trains && ti < 0; k++)
    if (!strcmp(cfg->trains[k].key, tr.key)) ti = k;
  if (ti < 0) {
    if (cfg->n_trains == MAX_TASKS) {
      perr(c, w, "more than %d classification heads", MAX_TASKS);
      goto fail;
    }
    ti = cfg->n_trains;
    cfg->trains[cfg->n_trains++] = tr;
  } else
    qlm_sweep_args_free(&tr.args);
  for (int k = 0; k < nb; k++) {
    long bs = 0;
    if (get_long(c, where_fmt(ww, sizeof ww, "%s.batch", w), value_at(b, k), 1, 1 << 16, &bs)) return c->err->code;
    qlm_sweep_task *t = new_task(c, w, cfg, QLM_TASK_CLASSIFY, "classify");
    if (!t) return c->err->code;
    t->train = ti, t->limit = limit;
    if (qlm_sweep_args_push(&t->args, "eval", c->err) || key_add(t->key, c->file, w, c->err, "classify-b%ld", bs)) return c->err->code;
    snprintf(nbuf, sizeof nbuf, "%ld", bs);
    if (push2(&t->args, "--batch", nbuf, c->err)) return c->err->code;
    if (has_limit && add_num_opt(c, w, t, "--limit", "-l", limit)) return c->err->code;
    if (feature && key_add(t->key, c->file, w, c->err, "-%s", feature)) return c->err->code;
    if (has_seed && key_add(t->key, c->file, w, c->err, "-s%ld", seed)) return c->err->code;
    if (task_common(c, w, e, t)) return c->err->code;
  }
  return QLM_OK;
fail:
  qlm_sweep_args_free(&tr.args);
  return c->err->code;
}

static int parse_mmlu(pctx *c, const char *w, const cJSON *e, qlm_sweep_config *cfg) {
  static const char *const known[] = {"task", "name", "shots", "limit", "subjects", "batch", "data", "args", NULL};
  if (check_keys(c, w, e, known)) return c->err->code;
  const cJSON *b = cJSON_GetObjectItemCaseSensitive(e, "batch");
  int nb = b ? n_values(b) : 1;
  if (nb == 0) return perr(c, w, "\"batch\" is an empty array");
  char ww[128];
  for (int k = 0; k < nb; k++) {
    qlm_sweep_task *t = new_task(c, w, cfg, QLM_TASK_MMLU, "mmlu");
    if (!t) return c->err->code;
    long shots = 0, limit = 0, bs = 0;
    int given;
    if (opt_long(c, w, e, "shots", 0, 5, &shots, &given) || add_num_opt(c, w, t, "--shots", "mmlu-k", shots) ||
        opt_long(c, w, e, "limit", 1, 1 << 24, &limit, &given) || (given && add_num_opt(c, w, t, "--limit", "-l", limit)))
      return c->err->code;
    t->shots = shots, t->limit = limit;
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(e, "subjects");
    if (s) {
      char list[4096] = "";
      for (int i = 0; i < n_values(s); i++) {
        const char *v = NULL;
        if (get_string(c, where_fmt(ww, sizeof ww, "%s.subjects", w), value_at(s, i), &v)) return c->err->code;
        size_t l = strlen(list);
        if (l + strlen(v) + 2 > sizeof list) return perr(c, ww, "list too long");
        snprintf(list + l, sizeof list - l, "%s%s", i ? "," : "", v);
      }
      if (push2(&t->args, "--subjects", list, c->err) || key_add(t->key, c->file, w, c->err, "-S%08x", (unsigned)fnv1a(list)))
        return c->err->code;
    }
    if (b) {
      if (get_long(c, where_fmt(ww, sizeof ww, "%s.batch", w), value_at(b, k), 1, 1 << 16, &bs) ||
          add_num_opt(c, w, t, "--batch", "-b", bs))
        return c->err->code;
    }
    if (task_common(c, w, e, t)) return c->err->code;
  }
  return QLM_OK;
}

static int parse_replay(pctx *c, const char *w, const cJSON *e, qlm_sweep_config *cfg) {
  static const char *const known[] = {"task", "name", "duration", "speedup", "seed", "n_predict", "mean_gap", "data", "args", NULL};
  if (check_keys(c, w, e, known)) return c->err->code;
  qlm_sweep_task *t = new_task(c, w, cfg, QLM_TASK_REPLAY, "replay");
  if (!t) return c->err->code;
  char ww[128], nb[64];
  const char *dur = "4h";
  const cJSON *j = cJSON_GetObjectItemCaseSensitive(e, "duration");
  if (j && get_string(c, where_fmt(ww, sizeof ww, "%s.duration", w), j, &dur)) return c->err->code;
  char *end;
  double secs = strtod(dur, &end);
  double unit = !strcmp(end, "s") || !*end ? 1 : !strcmp(end, "m") ? 60 : !strcmp(end, "h") ? 3600 : -1;
  if (end == dur || unit < 0 || !(secs > 0) || secs > 1e7)
    return perr(c, where_fmt(ww, sizeof ww, "%s.duration", w), "'%s' is not a duration such as 30s, 10m or 4h", dur);
  t->duration_s = secs * unit;
  if (push2(&t->args, "--duration", dur, c->err) || key_add(t->key, c->file, w, c->err, "replay-%s", dur)) return c->err->code;
  double sp = 0;
  if ((j = cJSON_GetObjectItemCaseSensitive(e, "speedup"))) {
    if (get_double(c, where_fmt(ww, sizeof ww, "%s.speedup", w), j, 1e-3, 1e6, &sp)) return c->err->code;
    num_text(sp, nb, sizeof nb);
    t->duration_s /= sp;
    if (push2(&t->args, "--speedup", nb, c->err) || key_add(t->key, c->file, w, c->err, "-x%s", nb)) return c->err->code;
  }
  if ((j = cJSON_GetObjectItemCaseSensitive(e, "mean_gap"))) {
    if (get_double(c, where_fmt(ww, sizeof ww, "%s.mean_gap", w), j, 1e-3, 1e6, &sp)) return c->err->code;
    num_text(sp, nb, sizeof nb);
    if (push2(&t->args, "--mean-gap", nb, c->err) || key_add(t->key, c->file, w, c->err, "-g%s", nb)) return c->err->code;
  }
  long v = 0;
  int given;
  if (opt_long(c, w, e, "seed", 0, 1L << 40, &v, &given) || (given && add_num_opt(c, w, t, "--seed", "-s", v)) ||
      opt_long(c, w, e, "n_predict", 1, 1 << 20, &v, &given) || (given && add_num_opt(c, w, t, "--n-predict", "-n", v)))
    return c->err->code;
  return task_common(c, w, e, t);
}

static int parse_tasks(pctx *c, const cJSON *j, const cJSON *batch_default, qlm_sweep_config *cfg) {
  if (!cJSON_IsArray(j) || cJSON_GetArraySize(j) == 0)
    return perr(c, "tasks", "expected a non-empty array of tasks ({\"task\": \"ppl\"}, {\"task\": \"classify\"}, "
                "...), got %s", j ? jtype(j) : "nothing (the key is required)");
  if (!(cfg->tasks = qlm_calloc(MAX_TASKS, sizeof *cfg->tasks, "sweep tasks", c->err)) ||
      !(cfg->trains = qlm_calloc(MAX_TASKS, sizeof *cfg->trains, "sweep heads", c->err)))
    return c->err->code;
  char w[64], w2[96];
  for (int i = 0; i < cJSON_GetArraySize(j); i++) {
    const cJSON *e = cJSON_GetArrayItem(j, i);
    where_fmt(w, sizeof w, "tasks[%d]", i);
    if (!cJSON_IsObject(e)) return perr(c, w, "expected an object {\"task\": \"ppl\", ...}, got %s", jtype(e));
    const char *kind = NULL;
    if (get_string(c, where_fmt(w2, sizeof w2, "%s.task", w), cJSON_GetObjectItemCaseSensitive(e, "task"), &kind))
      return c->err->code;
    int rc = !strcmp(kind, "ppl")        ? parse_ppl(c, w, e, cfg)
             : !strcmp(kind, "classify") ? parse_classify(c, w, e, batch_default, cfg)
             : !strcmp(kind, "mmlu")     ? parse_mmlu(c, w, e, cfg)
             : !strcmp(kind, "replay")   ? parse_replay(c, w, e, cfg)
                                         : perr(c, w2, "unknown task '%s' (ppl, classify, mmlu, replay)", kind);
    if (rc) return rc;
  }
  for (int i = 0; i < cfg->n_tasks; i++)
    for (int k = 0; k < i; k++)
      if (!strcmp(cfg->tasks[i].key, cfg->tasks[k].key))
        return perr(c, "tasks", "two task cells have the same key '%s' (a duplicate? give one a \"name\")", cfg->tasks[i].key);
  return QLM_OK;
}

/* ---- the whole config ---- */

static int parse_measure(pctx *c, const cJSON *root, qlm_sweep_config *cfg) {
  const cJSON *j;
  char nb[64];
  const char *s = NULL;
  double d = 0;
  if ((j = cJSON_GetObjectItemCaseSensitive(root, "country")) &&
      (get_string(c, "country", j, &s) || push2(&cfg->measure, "--country", s, c->err)))
    return c->err->code;
  static const struct { const char *key, *opt; double lo, hi; } nums[] = {
      {"pue", "--pue", 1, 10}, {"carbon_intensity", "--carbon-intensity", 0, 1e5}, {"cpu_tdp", "--cpu-tdp", 0.1, 1e4}};
  for (size_t k = 0; k < sizeof nums / sizeof *nums; k++) {
    if (!(j = cJSON_GetObjectItemCaseSensitive(root, nums[k].key))) continue;
    if (get_double(c, nums[k].key, j, nums[k].lo, nums[k].hi, &d)) return c->err->code;
    num_text(d, nb, sizeof nb);
    if (push2(&cfg->measure, nums[k].opt, nb, c->err)) return c->err->code;
  }
  int flag = 0;
  if ((j = cJSON_GetObjectItemCaseSensitive(root, "no_energy")) &&
      (get_bool(c, "no_energy", j, &flag) || (flag && qlm_sweep_args_push(&cfg->measure, "--no-energy", c->err))))
    return c->err->code;
  return QLM_OK;
}

static int parse_root(pctx *c, const cJSON *root, qlm_sweep_config *cfg) {
  static const char *const known[] = {"name", "description", "db", "work_dir", "models", "quant", "tasks", "batch",
                                      "repetitions", "country", "pue", "carbon_intensity", "cpu_tdp", "no_energy",
                                      "threads", NULL};
  if (!cJSON_IsObject(root)) return perr(c, "(top level)", "expected a JSON object, got %s", jtype(root));
  if (check_keys(c, "(top level)", root, known)) return c->err->code;
  const cJSON *j;
  const char *s = NULL;
  if ((j = cJSON_GetObjectItemCaseSensitive(root, "name"))) {
    if (get_string(c, "name", j, &s) || qlm_sweep_set(&cfg->name, s, c->err)) return c->err->code;
  }
  if ((j = cJSON_GetObjectItemCaseSensitive(root, "description")) && !cJSON_IsString(j))
    return perr(c, "description", "expected a string, got %s", jtype(j));
  if ((j = cJSON_GetObjectItemCaseSensitive(root, "db")) && (get_string(c, "db", j, &s) || expand_path(c, "db", s, &cfg->db)))
    return c->err->code;
  if (!cfg->db && qlm_sweep_set(&cfg->db, "qlm-results.db", c->err)) return c->err->code;
  if ((j = cJSON_GetObjectItemCaseSensitive(root, "work_dir")) &&
      (get_string(c, "work_dir", j, &s) || expand_path(c, "work_dir", s, &cfg->work_dir)))
    return c->err->code;
  long v = 1;
  int given;
  if (opt_long(c, "(top level)", root, "repetitions", 1, MAX_REPS, &v, &given)) return c->err->code;
  cfg->repetitions = (int)v;
  v = 0;
  if (opt_long(c, "(top level)", root, "threads", 1, 1024, &v, &given)) return c->err->code;
  cfg->threads = (int)v;
  const cJSON *batch = cJSON_GetObjectItemCaseSensitive(root, "batch");
  if (batch && !cJSON_IsNumber(batch) && !cJSON_IsArray(batch))
    return perr(c, "batch", "expected a batch size or an array of them, got %s", jtype(batch));
  if (parse_measure(c, root, cfg) || parse_models(c, cJSON_GetObjectItemCaseSensitive(root, "models"), cfg) ||
      parse_quants(c, cJSON_GetObjectItemCaseSensitive(root, "quant"), cfg) ||
      parse_tasks(c, cJSON_GetObjectItemCaseSensitive(root, "tasks"), batch, cfg))
    return c->err->code;
  size_t cells = (size_t)cfg->n_models * (size_t)cfg->n_quants * (size_t)cfg->n_tasks * (size_t)cfg->repetitions;
  if (cells > QLM_SWEEP_MAX_JOBS / 2)
    return perr(c, "(top level)", "the grid has %zu cells (at most %d)", cells, QLM_SWEEP_MAX_JOBS / 2);
  return QLM_OK;
}

/* Line and column of a byte offset, for JSON syntax errors. */
static void line_col(const char *text, size_t off, int *line, int *col) {
  *line = 1, *col = 1;
  for (size_t i = 0; i < off && text[i]; i++) {
    if (text[i] == '\n') ++*line, *col = 1;
    else ++*col;
  }
}

int qlm_sweep_parse(const char *text, const char *file, qlm_sweep_config **out, qlm_error *err) {
  *out = NULL;
  pctx c = {file, err};
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithOpts(text, &end, 1);
  if (!root) {
    size_t off = end ? (size_t)(end - text) : 0;
    int line, col;
    line_col(text, off, &line, &col);
    return qlm_fail(err, QLM_EFORMAT, "%s: line %d, column %d: not valid JSON near '%.20s'", file, line, col, text + off);
  }
  qlm_sweep_config *cfg = qlm_calloc(1, sizeof *cfg, "sweep config", err);
  int rc = cfg ? QLM_OK : err->code;
  if (!rc && !(cfg->file = strdup(file))) rc = qlm_fail(err, QLM_ENOMEM, "%s: out of memory", file);
  if (!rc) rc = parse_root(&c, root, cfg);
  if (!rc && !cfg->name) { /* the file name without directory and extension */
    const char *b = strrchr(file, '/');
    b = b ? b + 1 : file;
    const char *dot = strrchr(b, '.');
    char nm[128];
    snprintf(nm, sizeof nm, "%.*s", (int)(dot && dot != b ? dot - b : (int)strlen(b)), b);
    rc = qlm_sweep_set(&cfg->name, nm, err);
  }
  cJSON_Delete(root);
  if (rc) {
    qlm_sweep_config_free(cfg);
    return rc;
  }
  *out = cfg;
  return QLM_OK;
}

int qlm_sweep_load(const char *path, qlm_sweep_config **out, qlm_error *err) {
  char *text = NULL;
  size_t n = 0;
  int rc = qlm_read_file(path, CONFIG_MAX_BYTES, &text, &n, err);
  if (rc) return rc;
  if (strlen(text) != n) rc = qlm_fail(err, QLM_EFORMAT, "%s: contains a NUL byte (not a JSON text file)", path);
  if (!rc) rc = qlm_sweep_parse(text, path, out, err);
  free(text);
  return rc;
}

void qlm_sweep_config_free(qlm_sweep_config *cfg) {
  if (!cfg) return;
  for (int i = 0; i < cfg->n_models; i++) free(cfg->models[i].path);
  for (int i = 0; i < cfg->n_quants; i++) qlm_sweep_args_free(&cfg->quants[i].args);
  for (int i = 0; i < cfg->n_tasks; i++) qlm_sweep_args_free(&cfg->tasks[i].args), free(cfg->tasks[i].data);
  for (int i = 0; i < cfg->n_trains; i++) qlm_sweep_args_free(&cfg->trains[i].args);
  qlm_sweep_args_free(&cfg->measure);
  free(cfg->models), free(cfg->quants), free(cfg->tasks), free(cfg->trains);
  free(cfg->file), free(cfg->name), free(cfg->db), free(cfg->work_dir);
  free(cfg);
}

/* ---- expansion ---- */

int qlm_sweep_expand(const qlm_sweep_config *cfg, qlm_sweep_job **jobs, int *n_jobs, qlm_error *err) {
  size_t per_model = (size_t)cfg->n_quants + (size_t)cfg->n_trains + (size_t)cfg->n_quants * (size_t)cfg->n_tasks * (size_t)cfg->repetitions;
  size_t total = per_model * (size_t)cfg->n_models;
  if (total > QLM_SWEEP_MAX_JOBS) return qlm_fail(err, QLM_ELIMIT, "%s: %zu jobs (at most %d)", cfg->file, total, QLM_SWEEP_MAX_JOBS);
  qlm_sweep_job *J = qlm_calloc(total ? total : 1, sizeof *J, "sweep jobs", err);
  if (!J) return err->code;
  int n = 0;
  for (int m = 0; m < cfg->n_models; m++) {
    int qjob[MAX_QUANTS], tjob[MAX_TASKS];
    const char *mn = cfg->models[m].name;
    for (int q = 0; q < cfg->n_quants; q++) {
      qjob[q] = -1;
      if (cfg->quants[q].kind != QLM_SWEEP_QUANT) continue;
      qlm_sweep_job *j = &J[qjob[q] = n++];
      *j = (qlm_sweep_job){QLM_JOB_QUANTIZE, "", m, q, -1, -1, 0, -1, -1};
      snprintf(j->label, sizeof j->label, "quantize:%s/%s", mn, cfg->quants[q].key);
    }
    for (int t = 0; t < cfg->n_trains; t++) {
      qlm_sweep_job *j = &J[tjob[t] = n++];
      *j = (qlm_sweep_job){QLM_JOB_TRAIN, "", m, -1, -1, t, 0, -1, -1};
      snprintf(j->label, sizeof j->label, "train:%s/%s", mn, cfg->trains[t].key);
    }
    for (int q = 0; q < cfg->n_quants; q++)
      for (int t = 0; t < cfg->n_tasks; t++)
        for (int r = 1; r <= cfg->repetitions; r++) {
          const qlm_sweep_task *tk = &cfg->tasks[t];
          qlm_sweep_job *j = &J[n++];
          *j = (qlm_sweep_job){QLM_JOB_CELL, "", m, q, t, tk->train, r, qjob[q], tk->train >= 0 ? tjob[tk->train] : -1};
          int w = snprintf(j->label, sizeof j->label, "%s/%s/%s", mn, cfg->quants[q].key, tk->key);
          if (r > 1) snprintf(j->label + w, sizeof j->label - (size_t)w, "#r%d", r);
        }
  }
  *jobs = J;
  *n_jobs = n;
  return QLM_OK;
}

/* ---- files and command lines ---- */

static char *dup_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *dup_printf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = NULL;
  if (vasprintf(&s, fmt, ap) < 0) s = NULL;
  va_end(ap);
  return s;
}

char *qlm_sweep_work_dir(const qlm_sweep_config *cfg) {
  if (cfg->work_dir) return strdup(cfg->work_dir);
  const char *slash = strrchr(cfg->db, '/');
  if (!slash) return strdup("qlm-sweep-work");
  return dup_printf("%.*s/qlm-sweep-work", (int)(slash - cfg->db), cfg->db);
}

char *qlm_sweep_quant_path(const qlm_sweep_config *cfg, int model, int quant) {
  if (cfg->quants[quant].kind != QLM_SWEEP_QUANT) return strdup(cfg->models[model].path);
  char *w = qlm_sweep_work_dir(cfg);
  char *p = w ? dup_printf("%s/%s/%s.gguf", w, cfg->models[model].name, cfg->quants[quant].key) : NULL;
  free(w);
  return p;
}

char *qlm_sweep_head_path(const qlm_sweep_config *cfg, int model, int train) {
  char *w = qlm_sweep_work_dir(cfg);
  char *p = w ? dup_printf("%s/%s/head-%s.json", w, cfg->models[model].name, cfg->trains[train].key) : NULL;
  free(w);
  return p;
}

void qlm_sweep_argv_free(char **argv) {
  if (!argv) return;
  for (char **p = argv; *p; p++) free(*p);
  free(argv);
}

char **qlm_sweep_job_argv(const qlm_sweep_config *cfg, const qlm_sweep_job *job, const char *exe, int threads,
                          int record, qlm_error *err) {
  qlm_sweep_args a = {0};
  char *model = NULL, *out = NULL, nb[32];
  const char *cmd = job->kind == QLM_JOB_QUANTIZE ? "quantize" : job->kind == QLM_JOB_TRAIN ? "classify"
                                                                                            : cfg->tasks[job->task].command;
  int rc = qlm_sweep_args_push(&a, exe, err) || qlm_sweep_args_push(&a, cmd, err);
  const qlm_sweep_args *extra = NULL;
  if (!rc && job->kind == QLM_JOB_QUANTIZE) {
    model = strdup(cfg->models[job->model].path), out = qlm_sweep_quant_path(cfg, job->model, job->quant);
    rc = !model || !out || push2(&a, "-m", model, err) || push2(&a, "-o", out, err);
    extra = &cfg->quants[job->quant].args;
  } else if (!rc && job->kind == QLM_JOB_TRAIN) {
    model = strdup(cfg->models[job->model].path), out = qlm_sweep_head_path(cfg, job->model, job->train);
    rc = !model || !out || qlm_sweep_args_push(&a, "train", err) || push2(&a, "-m", model, err) ||
         push2(&a, "--out", out, err) || qlm_sweep_args_push(&a, "-q", err);
    extra = &cfg->trains[job->train].args;
  } else if (!rc) {
    const qlm_sweep_task *t = &cfg->tasks[job->task];
    model = qlm_sweep_quant_path(cfg, job->model, job->quant);
    int i0 = t->kind == QLM_TASK_CLASSIFY; /* "eval" comes first */
    rc = !model || (i0 && qlm_sweep_args_push(&a, t->args.v[0], err)) || push2(&a, "-m", model, err);
    if (!rc && t->train >= 0) {
      out = qlm_sweep_head_path(cfg, job->model, t->train);
      rc = !out || push2(&a, "--head", out, err);
    }
    for (int i = i0; !rc && i < t->args.n; i++) rc = qlm_sweep_args_push(&a, t->args.v[i], err);
    if (!rc) rc = qlm_sweep_args_push(&a, "-q", err);
  }
  for (int i = 0; !rc && extra && i < extra->n; i++) rc = qlm_sweep_args_push(&a, extra->v[i], err);
  if (!rc && threads > 0) {
    snprintf(nb, sizeof nb, "%d", threads);
    rc = push2(&a, "-t", nb, err);
  }
  for (int i = 0; !rc && i < cfg->measure.n; i++) rc = qlm_sweep_args_push(&a, cfg->measure.v[i], err);
  if (!rc && record) rc = push2(&a, "--db", cfg->db, err);
  if (!rc) rc = qlm_sweep_args_push(&a, "", err); /* room for the NULL */
  free(model), free(out);
  if (rc) {
    if (!err->code) qlm_fail(err, QLM_ENOMEM, "sweep: out of memory (command line of %s)", job->label);
    qlm_sweep_args_free(&a);
    return NULL;
  }
  free(a.v[a.n - 1]);
  a.v[a.n - 1] = NULL;
  return a.v;
}
