/* PLACEHOLDER until the hf reader lands: reports unsupported. */
#include "formats/source.h"

int qlm_hf_open(const char *dir, const char *tokenizer_json, qlm_source **out, qlm_error *err) {
  *out = NULL;
  return qlm_fail(err, QLM_EUNSUPPORTED, "%s: the hf reader is not built yet", dir);
}
