/* rules.c — parsing and matching of selective-precision rules (see rules.h). */
#include "quant/rules.h"

#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/mapfile.h"

#define MAX_RULES 256
#define MAX_WORDS 16
#define MAX_RANGES 16

typedef struct rule {
  bool any_layer;              /* no layers= condition */
  int n_ranges;
  int lo[MAX_RANGES], hi[MAX_RANGES]; /* layer ranges [lo, hi] */
  unsigned components;         /* bit mask of k_components; 0 = any */
  char *glob;                  /* name= pattern or NULL */
  qlm_choice choice;
} rule;

struct qlm_rules {
  int n;
  rule r[MAX_RULES];
  char *text;                  /* all rule lines, '\n'-separated */
  size_t text_len;
};

/* Components and the tensor-name stems they match. */
static const struct {
  const char *name, *stem;
} k_components[] = {
    {"attn_q", "attn_q"},       {"attn_k", "attn_k"},     {"attn_v", "attn_v"},   {"attn_o", "attn_output"},
    {"attn_qkv", "attn_qkv"},   {"ffn_gate", "ffn_gate"}, {"ffn_up", "ffn_up"},   {"ffn_down", "ffn_down"},
    {"embd", "token_embd"},     {"output", "output"},
};
enum { N_COMPONENTS = sizeof k_components / sizeof k_components[0] };
#define MASK_ATTN 0x1Fu
#define MASK_FFN 0xE0u

const char *qlm_tensor_component(const char *name, int *layer) {
  *layer = -1;
  if (!strcmp(name, "token_embd.weight")) return "embd";
  if (!strcmp(name, "output.weight")) return "output";
  if (strncmp(name, "blk.", 4) || !isdigit((unsigned char)name[4])) return NULL;
  char *end;
  long il = strtol(name + 4, &end, 10);
  if (*end != '.' || il > 1000000) return NULL;
  *layer = (int)il;
  for (int i = 0; i < N_COMPONENTS; i++) {
    size_t n = strlen(k_components[i].stem);
    if (!strncmp(end + 1, k_components[i].stem, n) && !strcmp(end + 1 + n, ".weight")) return k_components[i].name;
  }
  return NULL;
}

qlm_rules *qlm_rules_new(qlm_error *err) { return qlm_calloc(1, sizeof(qlm_rules), "rules", err); }

void qlm_rules_free(qlm_rules *r) {
  if (!r) return;
  for (int i = 0; i < r->n; i++) free(r->r[i].glob);
  free(r->text);
  free(r);
}

int qlm_rules_count(const qlm_rules *r) { return r ? r->n : 0; }
const char *qlm_rules_text(const qlm_rules *r) { return r && r->text ? r->text : ""; }

static int parse_layers(rule *ru, char *v, const char *where, qlm_error *err) {
  ru->any_layer = false;
  for (char *save = NULL, *tok = strtok_r(v, "|", &save); tok; tok = strtok_r(NULL, "|", &save)) {
    char *end;
    errno = 0;
    long lo = strtol(tok, &end, 10), hi = lo;
    if (*end == '-') hi = strtol(end + 1, &end, 10);
    if (errno || *end || end == tok || lo < 0 || hi < lo || hi > 1000000)
      return qlm_fail(err, QLM_EUSAGE, "%s: layers=%s: expected a range like 0-4 or a list like 0-4|10", where, tok);
    if (ru->n_ranges == MAX_RANGES) return qlm_fail(err, QLM_EUSAGE, "%s: more than %d layer ranges", where, MAX_RANGES);
    ru->lo[ru->n_ranges] = (int)lo;
    ru->hi[ru->n_ranges++] = (int)hi;
  }
  if (!ru->n_ranges) return qlm_fail(err, QLM_EUSAGE, "%s: layers= needs a range such as 0-4", where);
  return QLM_OK;
}

static int parse_components(rule *ru, char *v, const char *where, qlm_error *err) {
  for (char *save = NULL, *tok = strtok_r(v, "|", &save); tok; tok = strtok_r(NULL, "|", &save)) {
    if (!strcasecmp(tok, "attn")) ru->components |= MASK_ATTN;
    else if (!strcasecmp(tok, "ffn")) ru->components |= MASK_FFN;
    else if (!strcasecmp(tok, "linear")) ru->components |= MASK_ATTN | MASK_FFN;
    else {
      int i = 0;
      while (i < N_COMPONENTS && strcasecmp(tok, k_components[i].name)) i++;
      if (i == N_COMPONENTS)
        return qlm_fail(err, QLM_EUSAGE,
                        "%s: component=%s: expected attn_q, attn_k, attn_v, attn_o, attn_qkv, ffn_gate, ffn_up, "
                        "ffn_down, embd, output, attn, ffn or linear",
                        where, tok);
      ru->components |= 1u << i;
    }
  }
  return QLM_OK;
}

static int parse_selector(rule *ru, char *sel, const char *where, qlm_error *err) {
  ru->any_layer = true;
  if (!strcmp(sel, "*")) return QLM_OK;
  for (char *save = NULL, *cond = strtok_r(sel, ",", &save); cond; cond = strtok_r(NULL, ",", &save)) {
    char *eq = strchr(cond, '=');
    int rc = QLM_OK;
    if (!eq)
      return qlm_fail(err, QLM_EUSAGE, "%s: selector '%s': expected *, layers=..., component=... or name=...", where,
                      cond);
    *eq = 0;
    char *v = eq + 1;
    if (!strcmp(cond, "layers") || !strcmp(cond, "layer")) rc = parse_layers(ru, v, where, err);
    else if (!strcmp(cond, "component") || !strcmp(cond, "components")) rc = parse_components(ru, v, where, err);
    else if (!strcmp(cond, "name")) {
      free(ru->glob);
      if (!(ru->glob = strdup(v))) rc = qlm_fail(err, QLM_ENOMEM, "out of memory");
    } else
      rc = qlm_fail(err, QLM_EUSAGE, "%s: unknown selector '%s' (use layers=, component= or name=)", where, cond);
    if (rc) return rc;
  }
  return QLM_OK;
}

int qlm_choice_parse(int argc, char *const *argv, const char *where, qlm_choice *out, qlm_error *err) {
  memset(out, 0, sizeof *out);
  if (argc < 1) return qlm_fail(err, QLM_EUSAGE, "%s: missing the action (a method, f32 or f16)", where);
  const char *a = argv[0];
  if (!strcasecmp(a, "f32") || !strcasecmp(a, "keep") || !strcasecmp(a, "f16")) {
    out->kind = strcasecmp(a, "f16") ? QLM_CHOICE_F32 : QLM_CHOICE_F16;
    if (argc > 1) return qlm_fail(err, QLM_EUSAGE, "%s: %s takes no options ('%s')", where, a, argv[1]);
    return QLM_OK;
  }
  out->kind = QLM_CHOICE_METHOD;
  if (!(out->method = qlm_quant_method_find(a))) {
    char names[256] = "";
    const qlm_quant_method *const *m = qlm_quant_methods();
    for (int i = 0; m[i]; i++) {
      if (i) strncat(names, ", ", sizeof names - strlen(names) - 1);
      strncat(names, m[i]->name, sizeof names - strlen(names) - 1);
    }
    return qlm_fail(err, QLM_EUSAGE, "%s: unknown method '%s' (known: %s, f32, f16)", where, a, names);
  }
  for (int i = 1; i < argc; i++) {
    char kv[128];
    snprintf(kv, sizeof kv, "%s", argv[i]);
    char *eq = strchr(kv, '=');
    if (!eq) return qlm_fail(err, QLM_EUSAGE, "%s: option '%s' should be key=value", where, argv[i]);
    *eq = 0;
    int rc = qlm_quant_opts_parse_kv(&out->opts, kv, eq + 1, where, err);
    if (rc) return rc;
  }
  if (out->method->defaults) out->method->defaults(&out->opts);
  return QLM_OK;
}

static int append_text(qlm_rules *r, const char *line, qlm_error *err) {
  size_t n = strlen(line);
  char *t = realloc(r->text, r->text_len + n + 2);
  if (!t) return qlm_fail(err, QLM_ENOMEM, "out of memory");
  memcpy(t + r->text_len, line, n);
  r->text_len += n;
  t[r->text_len++] = '\n';
  t[r->text_len] = 0;
  r->text = t;
  return QLM_OK;
}

int qlm_rules_add(qlm_rules *r, const char *line, const char *where, qlm_error *err) {
  char buf[1024];
  if (strlen(line) >= sizeof buf) return qlm_fail(err, QLM_EUSAGE, "%s: rule longer than %zu bytes", where, sizeof buf);
  snprintf(buf, sizeof buf, "%s", line);
  char *hash = strchr(buf, '#');
  if (hash) *hash = 0;
  char *w[MAX_WORDS];
  int n = 0;
  for (char *save = NULL, *tok = strtok_r(buf, " \t\r\n", &save); tok; tok = strtok_r(NULL, " \t\r\n", &save)) {
    if (n == MAX_WORDS) return qlm_fail(err, QLM_EUSAGE, "%s: more than %d words", where, MAX_WORDS);
    w[n++] = tok;
  }
  if (n == 0) return QLM_OK;
  if (n < 2) return qlm_fail(err, QLM_EUSAGE, "%s: '%s': expected SELECTOR ACTION [key=value ...]", where, w[0]);
  if (r->n == MAX_RULES) return qlm_fail(err, QLM_EUSAGE, "%s: more than %d rules", where, MAX_RULES);
  rule *ru = &r->r[r->n];
  memset(ru, 0, sizeof *ru);
  int rc = parse_selector(ru, w[0], where, err);
  if (!rc) rc = qlm_choice_parse(n - 1, w + 1, where, &ru->choice, err);
  if (!rc) rc = append_text(r, line, err);
  if (rc) {
    free(ru->glob);
    ru->glob = NULL;
    return rc;
  }
  r->n++;
  return QLM_OK;
}

int qlm_rules_add_file(qlm_rules *r, const char *path, qlm_error *err) {
  size_t len;
  char *text = NULL;
  int rc = qlm_read_file(path, 1 << 20, &text, &len, err);
  if (rc) return rc;
  int lineno = 0;
  for (char *line = text; line && !rc;) {
    char *nl = memchr(line, '\n', len - (size_t)(line - text));
    if (nl) *nl = 0;
    char where[512];
    snprintf(where, sizeof where, "%s:%d", path, ++lineno);
    if (strlen(line) != (size_t)((nl ? nl : text + len) - line))
      rc = qlm_fail(err, QLM_EFORMAT, "%s: contains a NUL byte", where);
    else
      rc = qlm_rules_add(r, line, where, err);
    line = nl ? nl + 1 : NULL;
  }
  free(text);
  return rc;
}

static bool rule_matches(const rule *ru, const char *name) {
  int layer;
  const char *comp = qlm_tensor_component(name, &layer);
  if (!ru->any_layer) {
    bool in = false;
    for (int i = 0; i < ru->n_ranges && !in; i++) in = layer >= ru->lo[i] && layer <= ru->hi[i];
    if (!in) return false;
  }
  if (ru->components) {
    int i = 0;
    while (comp && i < N_COMPONENTS && strcmp(comp, k_components[i].name)) i++;
    if (!comp || i == N_COMPONENTS || !(ru->components & (1u << i))) return false;
  }
  return !ru->glob || fnmatch(ru->glob, name, 0) == 0;
}

bool qlm_rules_match(const qlm_rules *r, const char *name, qlm_choice *out) {
  for (int i = 0; r && i < r->n; i++)
    if (rule_matches(&r->r[i], name)) {
      *out = r->r[i].choice;
      return true;
    }
  return false;
}
