/* PLACEHOLDER until the gguf reader lands: reports unsupported. */
#include "formats/source.h"

int qlm_gguf_open(const char *path, qlm_source **out, qlm_error *err) {
  *out = NULL;
  return qlm_fail(err, QLM_EUNSUPPORTED, "%s: the gguf reader is not built yet", path);
}
