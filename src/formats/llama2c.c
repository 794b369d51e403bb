/* PLACEHOLDER until the llama2c reader lands: reports unsupported. */
#include "formats/source.h"

int qlm_llama2c_open(const char *path, const char *tokenizer_bin, qlm_source **out, qlm_error *err) {
  *out = NULL;
  return qlm_fail(err, QLM_EUNSUPPORTED, "%s: the llama2c reader is not built yet", path);
}
