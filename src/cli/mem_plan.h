/* mem_plan.h — the state an evaluation will create, computed before the model is loaded, so that
 * qlm_model_load_planned (model/model.h) can refuse a run whose converted weights + KV cache +
 * scratch + logits do not fit (exit 6) before anything big is allocated.
 *
 * The evaluation layers size their state from the data: classify's features from the longest
 * tokenized tweet (eval/classify.c qlm_features_extract), the multiple-choice scorer (zero-shot,
 * MMLU; eval/mmlu.c qlm_mc_score) from the longest context + continuation, rounded up to 64
 * positions.  These helpers tokenize the same texts the same way and return the same sizes. */
#ifndef QLM_CLI_MEM_PLAN_H
#define QLM_CLI_MEM_PLAN_H

#include "core/error.h"
#include "tokenizer/tokenizer.h"

/* The context qlm_features_extract gives its state for texts[0..n): the longest tokenization
 * (BOS/EOS as the vocab says), cut at max_tokens (<= 0 or > model_ctx: model_ctx); at least 1. */
int cli_features_ctx(const qlm_tokenizer *tok, char *const *texts, int n, int max_tokens, int model_ctx, int *ctx,
                     qlm_error *err);

/* The positions the multiple-choice scorer needs over a stream of items (its state's context is
 * then qlm_mc_state_ctx(need, limit), eval/mmlu.h). */
typedef struct cli_mc_need {
  int limit;  /* the scorer's context limit: max_ctx when in (0, model_ctx), else model_ctx */
  int need;   /* longest (truncated) context + continuation - 1 seen so far */
} cli_mc_need;
void cli_mc_need_init(cli_mc_need *n, int max_ctx, int model_ctx);
/* Add one item (tokenized as qlm_mc_item_build does). */
int cli_mc_need_add(cli_mc_need *n, const qlm_tokenizer *tok, const char *context, const char *const *choices,
                    int n_choices, int add_special, qlm_error *err);

#endif
