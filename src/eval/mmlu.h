/* mmlu.h — multiple-choice scoring by log-likelihood (shared by MMLU and zero-shot
 * classification), and MMLU itself in lm-evaluation-harness's format.
 *
 * A multiple-choice item is a context and K continuations; the score of a continuation is
 * sum_i log p(cont[i] | context, cont[<i]).  As lm-eval does, a continuation's tokens are those
 * of tokenize(context + continuation) after the first len(tokenize(context)) tokens, so a " A"
 * after "Answer:" is the token the model would see in running text. */
#ifndef QLM_MMLU_H
#define QLM_MMLU_H

#include <stdint.h>

#include "core/error.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

enum { QLM_MC_MAX_CHOICES = 16, QLM_MMLU_MAX_SUBJECTS = 128 };

/* ---- the log-likelihood scorer ---- */

typedef struct qlm_mc_item {
  int32_t *ctx;                           /* [n_ctx] context tokens */
  int n_ctx;
  int n_choices;
  int32_t *cont[QLM_MC_MAX_CHOICES];      /* [n_cont[j]] continuation tokens (>= 1 each) */
  int n_cont[QLM_MC_MAX_CHOICES];
} qlm_mc_item;

/* Tokenize context and choices into an item (lm-eval's split; see above).  add_special: BOS/EOS as
 * the vocab says on the context (lm-eval adds none). */
int qlm_mc_item_build(const qlm_tokenizer *tok, const char *context, const char *const *choices, int n_choices,
                      int add_special, qlm_mc_item *it, qlm_error *err);
void qlm_mc_item_free(qlm_mc_item *it);

/* Rows (tokens) per forward call of the scorer (its state's batch). */
enum { QLM_MC_ROWS = 256 };
/* The context the scorer gives its state for items needing `need` positions: rounded up to 64 (so
 * a few longer items do not each re-make the state), at most limit. */
int qlm_mc_state_ctx(int need, int limit);

typedef struct qlm_mc_scorer qlm_mc_scorer;
/* A scorer running up to `batch` items together (one sequence each, no padding), contexts
 * left-truncated to the model's context (max_ctx > 0 lowers it). */
int qlm_mc_scorer_new(const qlm_model *m, int batch, int max_ctx, int n_threads, qlm_mc_scorer **out, qlm_error *err);
void qlm_mc_scorer_free(qlm_mc_scorer *sc);
/* Score n items (n <= batch): ll[i * QLM_MC_MAX_CHOICES + j] = log-likelihood of choice j of item i.
 * Adds the tokens fed, truncations and the time to st (may be NULL). */
struct qlm_run_stats;
int qlm_mc_score(qlm_mc_scorer *sc, const qlm_mc_item *items, int n, double *ll, struct qlm_run_stats *st,
                 qlm_error *err);

/* ---- MMLU data and prompts ---- */

typedef struct qlm_mmlu_question {
  char *question, *choice[4];
  int answer; /* 0..3 */
} qlm_mmlu_question;

typedef struct qlm_mmlu_subject {
  char name[96];               /* file stem, e.g. "abstract_algebra" */
  qlm_mmlu_question *test, *dev;
  int n_test, n_dev;
} qlm_mmlu_subject;

/* Read one MMLU CSV (header question,choice0..choice3,answer; RFC 4180 quoting). */
int qlm_mmlu_read_csv(const char *path, qlm_mmlu_question **out, int *n, qlm_error *err);
void qlm_mmlu_questions_free(qlm_mmlu_question *q, int n);
/* Load <dir>/test/<s>_test.csv and <dir>/dev/<s>_dev.csv for the comma-separated subjects in
 * `only` (NULL or "" = every *_test.csv in <dir>/test, sorted by name). */
int qlm_mmlu_load(const char *dir, const char *only, qlm_mmlu_subject **out, int *n, qlm_error *err);
void qlm_mmlu_free(qlm_mmlu_subject *s, int n);

/* lm-eval's prompt for question q of subject s with the first n_shot dev questions as examples:
 *   "The following are multiple choice questions (with answers) about <subject, _ -> space>.\n\n"
 *   [ "<dev q>\nA. ..\nB. ..\nC. ..\nD. ..\nAnswer: <letter>\n\n" ] x n_shot
 *   "<q>\nA. <c0>\nB. <c1>\nC. <c2>\nD. <c3>\nAnswer:"
 * (questions stripped of surrounding whitespace); choices are " A".." D".  malloc'd. */
char *qlm_mmlu_prompt(const qlm_mmlu_subject *s, const qlm_mmlu_question *q, int n_shot);
extern const char *const QLM_MMLU_CHOICES[4];

/* Predictions (argmax over " A".." D" log-likelihoods) for the first max_q (0 = all) test questions
 * of s into pred, n_shot dev examples each, `batch` questions per scorer call (<= the scorer's). */
int qlm_mmlu_eval(qlm_mc_scorer *sc, const qlm_tokenizer *tok, const qlm_mmlu_subject *s, int n_shot, int max_q,
                  int add_special, int batch, int *pred, struct qlm_run_stats *st, qlm_error *err);

/* lm-eval's category of a subject (stem, humanities, social_sciences, other), NULL if unknown. */
const char *qlm_mmlu_category(const char *subject);

/* ---- peak memory ---- */
/* Reset the process's peak resident set (Linux /proc/self/clear_refs "5"; 0 if it worked). */
int qlm_peak_rss_reset(void);
/* Peak resident set size in bytes since start or the last reset (VmHWM), -1 if unknown. */
int64_t qlm_peak_rss_bytes(void);

#endif
