/* fuzz_rules.c — arbitrary bytes as a rules file (quant/rules.h): each line is added (errors
 * are fine), then the rules are matched against tensor names and printed. */
#include "fuzz_common.h"
#include "quant/rules.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *text = malloc(size + 1);
  if (!text) return 0;
  memcpy(text, data, size);
  text[size] = 0;
  qlm_error err = {0};
  qlm_rules *r = qlm_rules_new(&err);
  if (!r) {
    free(text);
    return 0;
  }
  int line = 0;
  for (char *save = NULL, *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
    char where[32];
    snprintf(where, sizeof where, "fuzz:%d", ++line);
    qlm_rules_add(r, l, where, &err);
  }
  static const char *names[] = {"blk.0.attn_q.weight", "blk.4.ffn_down.weight", "blk.17.attn_qkv.weight",
                                "token_embd.weight", "output.weight", "blk.99999999999.ffn_up.weight",
                                "output_norm.weight", "blk..attn_k.weight", ""};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    qlm_choice c;
    int layer;
    qlm_rules_match(r, names[i], &c);
    qlm_tensor_component(names[i], &layer);
  }
  const char *t = qlm_rules_text(r);
  if (t) fuzz_touch(t, strlen(t));
  int layer;
  memcpy(text, data, size); /* the whole input as a tensor name */
  text[size] = 0;
  qlm_tensor_component(text, &layer);
  qlm_rules_free(r);
  free(text);
  return 0;
}
