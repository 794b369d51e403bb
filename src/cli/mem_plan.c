/* mem_plan.c — the evaluation states' sizes before the model is loaded (see mem_plan.h). */
#include "cli/mem_plan.h"

#include <stdlib.h>
#include <string.h>

#include "eval/mmlu.h"

int cli_features_ctx(const qlm_tokenizer *tok, char *const *texts, int n, int max_tokens, int model_ctx, int *ctx,
                     qlm_error *err) {
  if (max_tokens <= 0 || max_tokens > model_ctx) max_tokens = model_ctx;
  int longest = 1;
  for (int i = 0; i < n; i++) {
    int32_t *ids = NULL;
    int len = 0;
    int rc = qlm_tokenize(tok, texts[i], strlen(texts[i]), 1, 0, &ids, &len, err);
    free(ids);
    if (rc) return qlm_fail_prefix(err, "text %d", i + 1);
    if (len > max_tokens) len = max_tokens;
    if (len > longest) longest = len;
  }
  *ctx = longest;
  return QLM_OK;
}

void cli_mc_need_init(cli_mc_need *n, int max_ctx, int model_ctx) {
  n->limit = max_ctx > 0 && max_ctx < model_ctx ? max_ctx : model_ctx;
  n->need = 1;
}

int cli_mc_need_add(cli_mc_need *n, const qlm_tokenizer *tok, const char *context, const char *const *choices,
                    int n_choices, int add_special, qlm_error *err) {
  qlm_mc_item it;
  int rc = qlm_mc_item_build(tok, context, choices, n_choices, add_special, &it, err);
  if (rc) return rc;
  int mc = 1;
  for (int j = 0; j < it.n_choices; j++)
    if (it.n_cont[j] > mc) mc = it.n_cont[j];
  /* the scorer cuts the context on the left so that context + longest continuation - 1 fits the
   * limit (an item whose continuation alone does not fit is its error, not a size) */
  if (mc <= n->limit - 1) {
    int room = n->limit - (mc - 1), kept = it.n_ctx < room ? it.n_ctx : room;
    if (kept + mc - 1 > n->need) n->need = kept + mc - 1;
  }
  qlm_mc_item_free(&it);
  return QLM_OK;
}
