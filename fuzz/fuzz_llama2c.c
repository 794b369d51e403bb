/* fuzz_llama2c.c — arbitrary bytes as llama2.c files.  The first byte picks what they are:
 * even = a checkpoint (config header + weights; read with no tokenizer, then loaded and run one
 * token when small), odd = a tokenizer.bin (read until the end of file). */
#include "formats/llama2c.h"
#include "fuzz_model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  char path[128];
  qlm_error err = {0};
  if (data[0] & 1) {
    fuzz_write("tok.bin.in", data + 1, size - 1, path, sizeof path);
    qlm_vocab v;
    qlm_vocab_init(&v);
    if (qlm_llama2c_read_tokenizer(path, (data[0] & 2) ? 512 : 0, &v, &err) == 0)
      for (int i = 0; i < v.n_tokens; i++) fuzz_touch(v.tokens[i], (size_t)v.token_len[i]);
    qlm_vocab_free(&v);
    return 0;
  }
  /* The name avoids tok*.bin so the reader does not pick the input up as its own tokenizer. */
  fuzz_write("model.bin", data + 1, size - 1, path, sizeof path);
  qlm_source *src = NULL;
  if (qlm_llama2c_open(path, NULL, &src, &err) == 0) {
    fuzz_run_source(src);
    qlm_source_close(src);
  }
  return 0;
}
