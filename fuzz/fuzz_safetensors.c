/* fuzz_safetensors.c — arbitrary bytes as a .safetensors file (u64 header length, JSON header,
 * data): every tensor the reader accepts must lie inside the file. */
#include "formats/safetensors.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char path[128];
  fuzz_write("model.safetensors", data, size, path, sizeof path);
  qlm_error err = {0};
  qlm_st_set set = {0};
  if (qlm_st_add_file(&set, path, &err) == 0) {
    for (int i = 0; i < set.n_tensors; i++) {
      fuzz_touch(set.tensors[i].name, strlen(set.tensors[i].name));
      fuzz_touch(set.tensors[i].data, set.tensors[i].nbytes);
      qlm_st_find(&set, set.tensors[i].name);
    }
  }
  qlm_st_free(&set);
  return 0;
}
