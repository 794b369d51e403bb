/* mmlu.c — the multiple-choice log-likelihood scorer, MMLU's CSV files and prompts, and the
 * peak-memory probe the evaluations report. */
#include "eval/mmlu.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/mapfile.h"
#include "eval/classify.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- items ---- */

void qlm_mc_item_free(qlm_mc_item *it) {
  if (!it) return;
  free(it->ctx);
  for (int j = 0; j < QLM_MC_MAX_CHOICES; j++) free(it->cont[j]);
  memset(it, 0, sizeof *it);
}

int qlm_mc_item_build(const qlm_tokenizer *tok, const char *context, const char *const *choices, int n_choices,
                      int add_special, qlm_mc_item *it, qlm_error *err) {
  memset(it, 0, sizeof *it);
  if (n_choices < 1 || n_choices > QLM_MC_MAX_CHOICES)
    return qlm_fail(err, QLM_EUSAGE, "multiple choice: %d choices (1..%d)", n_choices, QLM_MC_MAX_CHOICES);
  /* lm-eval moves the context's trailing spaces onto each continuation */
  size_t cl = strlen(context), keep = cl;
  while (keep > 0 && context[keep - 1] == ' ') keep--;
  int rc = qlm_tokenize(tok, context, keep, add_special, 0, &it->ctx, &it->n_ctx, err);
  it->n_choices = n_choices;
  for (int j = 0; !rc && j < n_choices; j++) {
    size_t chl = strlen(choices[j]), wl = cl + chl;
    char *whole = qlm_malloc(wl + 1, "prompt", err);
    if (!whole) {
      rc = QLM_ENOMEM;
      break;
    }
    memcpy(whole, context, cl);
    memcpy(whole + cl, choices[j], chl + 1);
    int32_t *w = NULL;
    int nw = 0;
    rc = qlm_tokenize(tok, whole, wl, add_special, 0, &w, &nw, err);
    free(whole);
    if (rc) break;
    if (nw > it->n_ctx) { /* the continuation is what follows the context's token count */
      it->n_cont[j] = nw - it->n_ctx;
      if (!(it->cont[j] = qlm_malloc((size_t)it->n_cont[j] * sizeof(int32_t), "continuation", err))) rc = QLM_ENOMEM;
      else memcpy(it->cont[j], w + it->n_ctx, (size_t)it->n_cont[j] * sizeof(int32_t));
      free(w);
    } else { /* degenerate merge across the boundary: tokenize the choice (and moved spaces) alone */
      free(w);
      size_t sl = cl - keep;
      char *c2 = qlm_malloc(sl + chl + 1, "continuation", err);
      if (!c2) {
        rc = QLM_ENOMEM;
        break;
      }
      memcpy(c2, context + keep, sl);
      memcpy(c2 + sl, choices[j], chl + 1);
      rc = qlm_tokenize(tok, c2, sl + chl, 0, 0, &it->cont[j], &it->n_cont[j], err);
      free(c2);
      if (!rc && it->n_cont[j] < 1) rc = qlm_fail(err, QLM_EUSAGE, "multiple choice: choice %d has no tokens", j);
    }
  }
  if (!rc && it->n_ctx < 1) rc = qlm_fail(err, QLM_EUSAGE, "multiple choice: the context has no tokens");
  if (rc) qlm_mc_item_free(it);
  return rc;
}

/* ---- the scorer ---- */


struct qlm_mc_scorer {
  const qlm_model *m;
  int batch, limit, n_threads;
  qlm_state *s;
  int s_ctx;                 /* n_ctx the state was made with */
  int32_t tok[QLM_MC_ROWS], pos[QLM_MC_ROWS], seq[QLM_MC_ROWS];
  int8_t want[QLM_MC_ROWS];
  float *logits;             /* [QLM_MC_ROWS x n_vocab]; only wanted rows are written (and touched) */
};

int qlm_mc_state_ctx(int need, int limit) {
  int c = (need + 63) / 64 * 64;
  return c > limit ? limit : c;
}

int qlm_mc_scorer_new(const qlm_model *m, int batch, int max_ctx, int n_threads, qlm_mc_scorer **out, qlm_error *err) {
  *out = NULL;
  if (batch < 1 || batch > 4096) return qlm_fail(err, QLM_EUSAGE, "scorer: batch %d is not in 1..4096", batch);
  qlm_mc_scorer *sc = qlm_calloc(1, sizeof *sc, "scorer", err);
  if (!sc) return QLM_ENOMEM;
  sc->m = m;
  sc->batch = batch;
  sc->limit = max_ctx > 0 && max_ctx < m->hp.n_ctx ? max_ctx : m->hp.n_ctx;
  sc->n_threads = n_threads;
  if (!(sc->logits = qlm_malloc((size_t)QLM_MC_ROWS * (size_t)m->hp.n_vocab * sizeof(float), "logits", err))) {
    free(sc);
    return QLM_ENOMEM;
  }
  *out = sc;
  return QLM_OK;
}

void qlm_mc_scorer_free(qlm_mc_scorer *sc) {
  if (!sc) return;
  qlm_state_free(sc->s);
  free(sc->logits);
  free(sc);
}

static double log_sum_exp(const float *l, int V) {
  float mx = -INFINITY;
  for (int i = 0; i < V; i++) mx = l[i] > mx ? l[i] : mx;
  double s = 0;
  for (int i = 0; i < V; i++) s += exp((double)l[i] - mx);
  return mx + log(s);
}

/* Which log-likelihood a wanted row adds to: item, choice (-1: the first token of every choice), and
 * the continuation token it predicts. */
typedef struct row_target {
  int item, choice, t;
} row_target;

typedef struct mc_pass {
  qlm_mc_scorer *sc;
  const qlm_mc_item *items;
  double *ll;
  int r;                         /* rows filled in the current chunk */
  row_target tgt[QLM_MC_ROWS];
  qlm_run_stats *st;
} mc_pass;

static int flush(mc_pass *p, qlm_error *err) {
  if (!p->r) return QLM_OK;
  qlm_mc_scorer *sc = p->sc;
  qlm_batch b = {.n = p->r, .token = sc->tok, .pos = sc->pos, .seq = sc->seq, .want_logits = sc->want};
  int rc = qlm_forward(sc->m, sc->s, &b, sc->logits, err), V = sc->m->hp.n_vocab;
  if (rc) return rc;
  if (p->st) p->st->tokens += p->r;
  for (int r = 0; r < p->r; r++) {
    if (!sc->want[r]) continue;
    const float *l = sc->logits + (size_t)r * V;
    double lse = log_sum_exp(l, V);
    const row_target *g = &p->tgt[r];
    const qlm_mc_item *it = &p->items[g->item];
    double *ll = p->ll + (size_t)g->item * QLM_MC_MAX_CHOICES;
    if (g->choice < 0)
      for (int j = 0; j < it->n_choices; j++) ll[j] = (double)l[it->cont[j][0]] - lse;
    else
      ll[g->choice] += (double)l[it->cont[g->choice][g->t]] - lse;
  }
  p->r = 0;
  return QLM_OK;
}

static int add_row(mc_pass *p, int32_t tok, int pos, int seq, int want, row_target tg, qlm_error *err) {
  qlm_mc_scorer *sc = p->sc;
  sc->tok[p->r] = tok;
  sc->pos[p->r] = pos;
  sc->seq[p->r] = seq;
  sc->want[p->r] = (int8_t)want;
  p->tgt[p->r] = tg;
  return ++p->r == QLM_MC_ROWS ? flush(p, err) : QLM_OK;
}

int qlm_mc_score(qlm_mc_scorer *sc, const qlm_mc_item *items, int n, double *ll, qlm_run_stats *st, qlm_error *err) {
  if (n < 1 || n > sc->batch) return qlm_fail(err, QLM_EUSAGE, "scorer: %d items (1..%d)", n, sc->batch);
  /* contexts are cut on the left so that context + longest continuation - 1 fits */
  int need = 1, skip[4096];
  for (int i = 0; i < n; i++) {
    const qlm_mc_item *it = &items[i];
    int mc = 1;
    if (it->n_ctx < 1 || it->n_choices < 1 || it->n_choices > QLM_MC_MAX_CHOICES)
      return qlm_fail(err, QLM_EUSAGE, "scorer: item %d has no context or a bad number of choices", i);
    for (int j = 0; j < it->n_choices; j++) {
      if (it->n_cont[j] < 1 || !it->cont[j]) return qlm_fail(err, QLM_EUSAGE, "scorer: item %d choice %d is empty", i, j);
      if (it->n_cont[j] > mc) mc = it->n_cont[j];
    }
    if (mc > sc->limit - 1)
      return qlm_fail(err, QLM_EUSAGE, "scorer: item %d: a continuation of %d tokens does not fit the context of %d", i,
                      mc, sc->limit);
    int room = sc->limit - (mc - 1);
    skip[i] = it->n_ctx > room ? it->n_ctx - room : 0;
    if (skip[i] && st) st->truncated++;
    int total = it->n_ctx - skip[i] + mc - 1;
    if (total > need) need = total;
  }
  if (!sc->s || sc->s_ctx < need) {
    qlm_state_free(sc->s);
    sc->s = NULL;
    int c = qlm_mc_state_ctx(need, sc->limit);
    int rc = qlm_state_new(sc->m, sc->batch, c, QLM_MC_ROWS, sc->n_threads, &sc->s, err);
    if (rc) return rc;
    sc->s_ctx = c;
  }
  double t0 = now_s();
  mc_pass p = {.sc = sc, .items = items, .ll = ll, .st = st};
  int rc = QLM_OK;
  /* pass 1: every context; its last row gives each choice's first token */
  for (int i = 0; !rc && i < n; i++) {
    qlm_state_clear(sc->s, i);
    const qlm_mc_item *it = &items[i];
    int nc = it->n_ctx - skip[i];
    for (int k = 0; !rc && k < nc; k++)
      rc = add_row(&p, it->ctx[skip[i] + k], k, i, k == nc - 1, (row_target){i, -1, 0}, err);
  }
  if (!rc) rc = flush(&p, err);
  /* pass 2, per choice: the continuation's own tokens, written over the same positions after the
   * context (a batch that starts before a sequence's end rewrites it) */
  for (int j = 0; !rc && j < QLM_MC_MAX_CHOICES; j++) {
    for (int i = 0; !rc && i < n; i++) {
      const qlm_mc_item *it = &items[i];
      if (j >= it->n_choices || it->n_cont[j] < 2) continue;
      int nc = it->n_ctx - skip[i];
      for (int t = 0; !rc && t < it->n_cont[j] - 1; t++)
        rc = add_row(&p, it->cont[j][t], nc + t, i, 1, (row_target){i, j, t + 1}, err);
    }
    if (!rc) rc = flush(&p, err);
  }
  if (st) st->seconds += now_s() - t0;
  return rc;
}

/* ---- MMLU files ---- */

void qlm_mmlu_questions_free(qlm_mmlu_question *q, int n) {
  if (!q) return;
  for (int i = 0; i < n; i++) {
    free(q[i].question);
    for (int j = 0; j < 4; j++) free(q[i].choice[j]);
  }
  free(q);
}

/* One RFC 4180 field starting at *p (quoted: "" is a quote; may hold newlines).  Returns a
 * malloc'd string, advances *p past the field and sets *end_of_row. */
static char *csv_field(const char **p, const char *end, int *end_of_row, int *bad) {
  const char *s = *p;
  size_t cap = 64, n = 0;
  char *out = malloc(cap);
  if (!out) return NULL;
  int quoted = s < end && *s == '"';
  if (quoted) s++;
  for (;;) {
    if (s >= end) {
      if (quoted) *bad = 1;
      *end_of_row = 1;
      break;
    }
    char c = *s;
    if (quoted && c == '"') {
      if (s + 1 < end && s[1] == '"') {
        s += 2;
        c = '"';
      } else {
        s++;
        quoted = 0;
        continue;
      }
    } else if (!quoted && (c == ',' || c == '\n' || c == '\r')) {
      if (c == '\r' && s + 1 < end && s[1] == '\n') s++;
      *end_of_row = c != ',';
      s++;
      break;
    } else {
      s++;
    }
    if (n + 2 > cap) {
      char *o2 = realloc(out, cap *= 2);
      if (!o2) {
        free(out);
        return NULL;
      }
      out = o2;
    }
    out[n++] = c;
  }
  out[n] = '\0';
  *p = s;
  return out;
}

int qlm_mmlu_read_csv(const char *path, qlm_mmlu_question **out, int *n_out, qlm_error *err) {
  *out = NULL;
  *n_out = 0;
  char *buf = NULL;
  size_t len = 0;
  int rc = qlm_read_file(path, 64u << 20, &buf, &len, err);
  if (rc) return rc;
  const char *p = buf, *end = buf + len;
  int cap = 0, n = 0, line = 1;
  qlm_mmlu_question *q = NULL;
  static const char *const header[6] = {"question", "choice0", "choice1", "choice2", "choice3", "answer"};
  while (!rc && p < end) {
    char *f[6] = {0};
    int k = 0, eor = 0, bad = 0;
    while (!eor && k < 7) {
      char *v = csv_field(&p, end, &eor, &bad);
      if (!v) {
        rc = qlm_fail(err, QLM_ENOMEM, "%s: out of memory", path);
        break;
      }
      if (k < 6) f[k] = v;
      else free(v);
      k++;
    }
    if (!rc && (bad || k != 6))
      rc = qlm_fail(err, QLM_EFORMAT, "%s: row %d: %s", path, line, bad ? "unterminated quote" : "expected 6 fields");
    if (!rc && line == 1) {
      for (int j = 0; j < 6 && !rc; j++)
        if (strcmp(f[j], header[j]))
          rc = qlm_fail(err, QLM_EFORMAT, "%s: header field %d is '%.40s', expected '%s'", path, j + 1, f[j], header[j]);
      for (int j = 0; j < 6; j++) free(f[j]);
      line++;
      continue;
    }
    if (!rc && (strlen(f[5]) != 1 || f[5][0] < '0' || f[5][0] > '3'))
      rc = qlm_fail(err, QLM_EFORMAT, "%s: row %d: answer '%.20s' is not 0..3", path, line, f[5]);
    if (!rc && n == cap) {
      if (cap >= 1 << 20) rc = qlm_fail(err, QLM_ELIMIT, "%s: more than %d questions", path, 1 << 20);
      qlm_mmlu_question *nq = rc ? NULL : realloc(q, (size_t)(cap = cap ? 2 * cap : 128) * sizeof *q);
      if (!rc && !nq) rc = qlm_fail(err, QLM_ENOMEM, "%s: out of memory", path);
      if (nq) q = nq;
    }
    if (rc) {
      for (int j = 0; j < 6; j++) free(f[j]);
      break;
    }
    q[n] = (qlm_mmlu_question){.question = f[0], .choice = {f[1], f[2], f[3], f[4]}, .answer = f[5][0] - '0'};
    free(f[5]);
    n++;
    line++;
  }
  free(buf);
  if (!rc && line == 1) rc = qlm_fail(err, QLM_EFORMAT, "%s: empty file (no header)", path);
  if (rc) {
    qlm_mmlu_questions_free(q, n);
    return rc;
  }
  *out = q;
  *n_out = n;
  return QLM_OK;
}

void qlm_mmlu_free(qlm_mmlu_subject *s, int n) {
  if (!s) return;
  for (int i = 0; i < n; i++) {
    qlm_mmlu_questions_free(s[i].test, s[i].n_test);
    qlm_mmlu_questions_free(s[i].dev, s[i].n_dev);
  }
  free(s);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int valid_subject(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n >= 96) return 0;
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_')) return 0;
  return 1;
}

/* Subject names: the comma list, or every <dir>/test/NAME_test.csv, sorted. */
static int list_subjects(const char *dir, const char *only, char ***names, int *n, qlm_error *err) {
  char **v = calloc(QLM_MMLU_MAX_SUBJECTS, sizeof *v);
  int k = 0, rc = QLM_OK;
  if (!v) return qlm_fail(err, QLM_ENOMEM, "mmlu: out of memory");
  if (only && *only) {
    const char *p = only;
    while (!rc && *p) {
      const char *c = strchr(p, ',');
      size_t l = c ? (size_t)(c - p) : strlen(p);
      if (k == QLM_MMLU_MAX_SUBJECTS) rc = qlm_fail(err, QLM_ELIMIT, "--subjects: more than %d", QLM_MMLU_MAX_SUBJECTS);
      else if (!(v[k] = strndup(p, l))) rc = qlm_fail(err, QLM_ENOMEM, "mmlu: out of memory");
      else if (!valid_subject(v[k++])) rc = qlm_fail(err, QLM_EUSAGE, "--subjects: '%s' is not a subject name", v[k - 1]);
      p += l + (c ? 1 : 0);
    }
  } else {
    char path[4200];
    snprintf(path, sizeof path, "%s/test", dir);
    DIR *d = opendir(path);
    if (!d) rc = qlm_fail(err, QLM_EIO, "%s: cannot open the MMLU test folder", path);
    struct dirent *e;
    while (!rc && d && (e = readdir(d))) {
      size_t l = strlen(e->d_name);
      if (l <= 9 || strcmp(e->d_name + l - 9, "_test.csv")) continue;
      if (k == QLM_MMLU_MAX_SUBJECTS) rc = qlm_fail(err, QLM_ELIMIT, "%s: more than %d subjects", path, QLM_MMLU_MAX_SUBJECTS);
      else if (!(v[k] = strndup(e->d_name, l - 9))) rc = qlm_fail(err, QLM_ENOMEM, "mmlu: out of memory");
      else if (!valid_subject(v[k++])) {
        free(v[--k]);
        v[k] = NULL;
      }
    }
    if (d) closedir(d);
    if (!rc && !k) rc = qlm_fail(err, QLM_EIO, "%s: no *_test.csv files", path);
    if (!rc) qsort(v, (size_t)k, sizeof *v, cmp_str);
  }
  if (rc) {
    for (int i = 0; i < k; i++) free(v[i]);
    free(v);
    return rc;
  }
  *names = v;
  *n = k;
  return QLM_OK;
}

int qlm_mmlu_load(const char *dir, const char *only, qlm_mmlu_subject **out, int *n_out, qlm_error *err) {
  *out = NULL;
  *n_out = 0;
  char **names = NULL;
  int n = 0, rc = list_subjects(dir, only, &names, &n, err);
  if (rc) return rc;
  qlm_mmlu_subject *s = qlm_calloc((size_t)n, sizeof *s, "subjects", err);
  if (!s) rc = QLM_ENOMEM;
  for (int i = 0; !rc && i < n; i++) {
    char path[4400];
    snprintf(s[i].name, sizeof s[i].name, "%s", names[i]);
    snprintf(path, sizeof path, "%s/test/%s_test.csv", dir, names[i]);
    rc = qlm_mmlu_read_csv(path, &s[i].test, &s[i].n_test, err);
    snprintf(path, sizeof path, "%s/dev/%s_dev.csv", dir, names[i]);
    if (!rc) rc = qlm_mmlu_read_csv(path, &s[i].dev, &s[i].n_dev, err);
  }
  for (int i = 0; i < n; i++) free(names[i]);
  free(names);
  if (rc) {
    qlm_mmlu_free(s, n);
    return rc;
  }
  *out = s;
  *n_out = n;
  return QLM_OK;
}

const char *const QLM_MMLU_CHOICES[4] = {" A", " B", " C", " D"};

/* The text between leading and trailing whitespace (Python's str.strip()). */
static void strip_span(const char *s, const char **b, size_t *len) {
  const char *e = s + strlen(s);
  while (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r') s++;
  while (e > s && (e[-1] == ' ' || e[-1] == '\n' || e[-1] == '\t' || e[-1] == '\r')) e--;
  *b = s;
  *len = (size_t)(e - s);
}

static int append(char **buf, size_t *len, size_t *cap, const char *s, size_t n) {
  if (*len + n + 1 > *cap) {
    size_t nc = (*cap + n + 1) * 2;
    char *nb = realloc(*buf, nc);
    if (!nb) return -1;
    *buf = nb;
    *cap = nc;
  }
  memcpy(*buf + *len, s, n);
  *len += n;
  (*buf)[*len] = '\0';
  return 0;
}

static int append_question(char **buf, size_t *len, size_t *cap, const qlm_mmlu_question *q) {
  const char *b;
  size_t l;
  strip_span(q->question, &b, &l);
  if (append(buf, len, cap, b, l)) return -1;
  for (int j = 0; j < 4; j++) {
    char lab[4] = {'\n', (char)('A' + j), '.', ' '};
    if (append(buf, len, cap, lab, 4) || append(buf, len, cap, q->choice[j], strlen(q->choice[j]))) return -1;
  }
  return append(buf, len, cap, "\nAnswer:", 8);
}

char *qlm_mmlu_prompt(const qlm_mmlu_subject *s, const qlm_mmlu_question *q, int n_shot) {
  char *buf = NULL, subj[96];
  size_t len = 0, cap = 0;
  snprintf(subj, sizeof subj, "%s", s->name);
  for (char *c = subj; *c; c++)
    if (*c == '_') *c = ' ';
  const char *pre = "The following are multiple choice questions (with answers) about ";
  if (append(&buf, &len, &cap, pre, strlen(pre)) || append(&buf, &len, &cap, subj, strlen(subj)) ||
      append(&buf, &len, &cap, ".\n\n", 3))
    goto oom;
  for (int i = 0; i < n_shot && i < s->n_dev; i++) {
    if (append_question(&buf, &len, &cap, &s->dev[i]) ||
        append(&buf, &len, &cap, QLM_MMLU_CHOICES[s->dev[i].answer], 2) || append(&buf, &len, &cap, "\n\n", 2))
      goto oom;
  }
  if (append_question(&buf, &len, &cap, q)) goto oom;
  return buf;
oom:
  free(buf);
  return NULL;
}

static const struct {
  const char *subject, *category;
} categories[] = {
    {"abstract_algebra", "stem"}, {"anatomy", "stem"}, {"astronomy", "stem"}, {"business_ethics", "other"},
    {"clinical_knowledge", "other"}, {"college_biology", "stem"}, {"college_chemistry", "stem"},
    {"college_computer_science", "stem"}, {"college_mathematics", "stem"}, {"college_medicine", "other"},
    {"college_physics", "stem"}, {"computer_security", "stem"}, {"conceptual_physics", "stem"},
    {"econometrics", "social_sciences"}, {"electrical_engineering", "stem"}, {"elementary_mathematics", "stem"},
    {"formal_logic", "humanities"}, {"global_facts", "other"}, {"high_school_biology", "stem"},
    {"high_school_chemistry", "stem"}, {"high_school_computer_science", "stem"},
    {"high_school_european_history", "humanities"}, {"high_school_geography", "social_sciences"},
    {"high_school_government_and_politics", "social_sciences"}, {"high_school_macroeconomics", "social_sciences"},
    {"high_school_mathematics", "stem"}, {"high_school_microeconomics", "social_sciences"},
    {"high_school_physics", "stem"}, {"high_school_psychology", "social_sciences"}, {"high_school_statistics", "stem"},
    {"high_school_us_history", "humanities"}, {"high_school_world_history", "humanities"}, {"human_aging", "other"},
    {"human_sexuality", "social_sciences"}, {"international_law", "humanities"}, {"jurisprudence", "humanities"},
    {"logical_fallacies", "humanities"}, {"machine_learning", "stem"}, {"management", "other"},
    {"marketing", "other"}, {"medical_genetics", "other"}, {"miscellaneous", "other"},
    {"moral_disputes", "humanities"}, {"moral_scenarios", "humanities"}, {"nutrition", "other"},
    {"philosophy", "humanities"}, {"prehistory", "humanities"}, {"professional_accounting", "other"},
    {"professional_law", "humanities"}, {"professional_medicine", "other"},
    {"professional_psychology", "social_sciences"}, {"public_relations", "social_sciences"},
    {"security_studies", "social_sciences"}, {"sociology", "social_sciences"},
    {"us_foreign_policy", "social_sciences"}, {"virology", "other"}, {"world_religions", "humanities"},
};

const char *qlm_mmlu_category(const char *subject) {
  for (size_t i = 0; i < sizeof categories / sizeof categories[0]; i++)
    if (!strcmp(categories[i].subject, subject)) return categories[i].category;
  return NULL;
}

int qlm_mmlu_eval(qlm_mc_scorer *sc, const qlm_tokenizer *tok, const qlm_mmlu_subject *s, int n_shot, int max_q,
                  int add_special, int batch, int *pred, qlm_run_stats *st, qlm_error *err) {
  int n = max_q > 0 && max_q < s->n_test ? max_q : s->n_test, rc = QLM_OK;
  if (batch < 1) batch = 1;
  qlm_mc_item *items = qlm_calloc((size_t)batch, sizeof *items, "items", err);
  double *ll = qlm_malloc((size_t)batch * QLM_MC_MAX_CHOICES * sizeof *ll, "scores", err);
  if (!items || !ll) rc = QLM_ENOMEM;
  for (int i0 = 0; !rc && i0 < n; i0 += batch) {
    int nb = n - i0 < batch ? n - i0 : batch, built = 0;
    for (int j = 0; !rc && j < nb; j++) {
      char *prompt = qlm_mmlu_prompt(s, &s->test[i0 + j], n_shot);
      if (!prompt) rc = qlm_fail(err, QLM_ENOMEM, "mmlu: out of memory building a prompt");
      else rc = qlm_mc_item_build(tok, prompt, QLM_MMLU_CHOICES, 4, add_special, &items[j], err);
      free(prompt);
      if (!rc) built++;
      else qlm_fail_prefix(err, "%s question %d", s->name, i0 + j + 1);
    }
    if (!rc) rc = qlm_mc_score(sc, items, nb, ll, st, err);
    for (int j = 0; !rc && j < nb; j++) {
      const double *l = ll + (size_t)j * QLM_MC_MAX_CHOICES;
      int arg = 0;
      for (int c = 1; c < 4; c++)
        if (l[c] > l[arg]) arg = c;
      pred[i0 + j] = arg;
    }
    for (int j = 0; j < built; j++) qlm_mc_item_free(&items[j]);
  }
  free(items);
  free(ll);
  return rc;
}

/* ---- peak memory ---- */

int qlm_peak_rss_reset(void) {
  FILE *f = fopen("/proc/self/clear_refs", "w");
  if (!f) return -1;
  int ok = fputs("5", f) >= 0;
  return (fclose(f) == 0 && ok) ? 0 : -1;
}

int64_t qlm_peak_rss_bytes(void) {
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return -1;
  char line[256];
  long long kb = -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmHWM: %lld kB", &kb) == 1) break;
  fclose(f);
  return kb < 0 ? -1 : (int64_t)kb * 1024;
}
