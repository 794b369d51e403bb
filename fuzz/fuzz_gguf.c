/* fuzz_gguf.c — arbitrary bytes as a GGUF file: the reader must accept or fail cleanly; what it
 * accepts is loaded as a model and run for one token when small (fuzz_model.h). */
#include "fuzz_model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char path[128];
  fuzz_write("in.gguf", data, size, path, sizeof path);
  qlm_error err = {0};
  qlm_source *src = NULL;
  if (qlm_gguf_open(path, &src, &err) == 0) {
    for (int i = 0; i < src->n_meta; i++) fuzz_touch(src->meta[i].key, strlen(src->meta[i].key));
    fuzz_run_source(src);
    qlm_source_close(src);
  }
  return 0;
}
