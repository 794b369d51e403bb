/* zeroshot.c — zero-shot classification: the class whose label word the model finds most likely
 * after a prompt (seed 000's prompting baseline, scored by log-likelihood as lm-eval does). */
#include <stdlib.h>
#include <string.h>

#include "eval/classify.h"
#include "eval/mmlu.h"

const char *const QLM_ZEROSHOT_TEMPLATE =
    "Classify the sentiment of the tweet as negative, neutral or positive.\nTweet: {text}\nSentiment:";
const char *const QLM_ZEROSHOT_LABELS[3] = {" negative", " neutral", " positive"};

char *qlm_zeroshot_prompt(const char *tpl, const char *text) {
  static const char key[] = "{text}";
  size_t kl = sizeof key - 1, tl = strlen(text), n = 0, cap = strlen(tpl) + 1;
  for (const char *p = strstr(tpl, key); p; p = strstr(p + kl, key)) cap += tl;
  char *out = malloc(cap);
  if (!out) return NULL;
  for (const char *p = tpl; *p;) {
    if (!strncmp(p, key, kl)) {
      memcpy(out + n, text, tl);
      n += tl;
      p += kl;
    } else {
      out[n++] = *p++;
    }
  }
  out[n] = '\0';
  return out;
}

int qlm_zeroshot_classify(const qlm_model *m, const qlm_tokenizer *tok, char *const *texts, int n,
                          const qlm_zeroshot_opts *o, int *pred, double *ll, qlm_run_stats *st,
                          void (*progress)(void *ctx, int done, int total), void *pctx, qlm_error *err) {
  if (!o->template_ || !strstr(o->template_, "{text}"))
    return qlm_fail(err, QLM_EUSAGE, "zero-shot: the prompt template must contain {text}");
  if (o->n_class < 2 || o->n_class > QLM_MC_MAX_CHOICES)
    return qlm_fail(err, QLM_EUSAGE, "zero-shot: %d label words (2..%d)", o->n_class, QLM_MC_MAX_CHOICES);
  int batch = o->batch > 0 ? o->batch : 1;
  qlm_mc_scorer *sc = NULL;
  int rc = qlm_mc_scorer_new(m, batch, o->max_tokens, o->n_threads, &sc, err);
  qlm_mc_item *items = rc ? NULL : qlm_calloc((size_t)batch, sizeof *items, "items", err);
  double *l = rc ? NULL : qlm_malloc((size_t)batch * QLM_MC_MAX_CHOICES * sizeof *l, "scores", err);
  if (!rc && (!items || !l)) rc = QLM_ENOMEM;
  for (int i0 = 0; !rc && i0 < n; i0 += batch) {
    int nb = n - i0 < batch ? n - i0 : batch, built = 0;
    for (int j = 0; !rc && j < nb; j++) {
      char *prompt = qlm_zeroshot_prompt(o->template_, texts[i0 + j]);
      if (!prompt) rc = qlm_fail(err, QLM_ENOMEM, "zero-shot: out of memory building a prompt");
      else rc = qlm_mc_item_build(tok, prompt, o->label_words, o->n_class, 1, &items[j], err);
      free(prompt);
      if (!rc) built++;
      else qlm_fail_prefix(err, "text %d", i0 + j + 1);
    }
    if (!rc) rc = qlm_mc_score(sc, items, nb, l, st, err);
    for (int j = 0; !rc && j < nb; j++) {
      const double *lj = l + (size_t)j * QLM_MC_MAX_CHOICES;
      int arg = 0;
      for (int c = 1; c < o->n_class; c++)
        if (lj[c] > lj[arg]) arg = c;
      pred[i0 + j] = arg;
      if (ll) memcpy(ll + (size_t)(i0 + j) * o->n_class, lj, (size_t)o->n_class * sizeof *ll);
    }
    for (int j = 0; j < built; j++) qlm_mc_item_free(&items[j]);
    if (!rc && progress) progress(pctx, i0 + nb, n);
  }
  free(items);
  free(l);
  qlm_mc_scorer_free(sc);
  return rc;
}
