/* fuzz_hf_config.c — arbitrary bytes as a Hugging Face config.json.  The scratch folder also
 * holds a link to stories260K-hf's model.safetensors, so configs that agree with its shapes get
 * past the tensor matching into a model load and a forward pass. */
#include "fuzz_model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int linked;
  char path[128], st[512], link[128];
  if (!linked) {
    snprintf(link, sizeof link, "%s/model.safetensors", fuzz_dir());
    if (symlink(fuzz_shared("models/stories260K-hf/model.safetensors", st, sizeof st), link) != 0)
      perror("fuzz_hf_config: symlink (continuing without weights)");
    linked = 1;
  }
  fuzz_write("config.json", data, size, path, sizeof path);
  char tok[512];
  fuzz_shared("tokenizers/smollm2-135m/tokenizer.json", tok, sizeof tok);
  qlm_error err = {0};
  qlm_source *src = NULL;
  /* The tokenizer is given explicitly, so a config naming an arbitrary path cannot redirect it. */
  if (qlm_hf_open(fuzz_dir(), tok, &src, &err) == 0) {
    fuzz_run_source(src);
    qlm_source_close(src);
  }
  return 0;
}
