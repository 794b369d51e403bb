/* test_state_mem.c — the memory check's plan of the state equals what qlm_state_new allocates.
 *
 * qlm_state_kv_bytes + qlm_state_scratch_bytes (model.h, read from the one buffer table
 * qlm_state_buffers) are what `qlm run/ppl/...` refuse on; here every qlm_calloc made inside
 * qlm_state_new is counted through a linker wrapper (-Wl,--wrap=qlm_calloc, tests/CMakeLists.txt)
 * and compared with the table buffer by buffer: sizes and labels in allocation order, after the
 * state struct itself (the first allocation).  The thread pool (plain calloc) is not state memory
 * the table claims.  Models: stories260K (llama, GQA-free) and a GPT-2-shaped one (n_rot = 0: its
 * rope tables are empty and allocated as one float), at several argument sets incl. defaults. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/source.h"
#include "model/model.h"

enum { MAX_CALLS = 64 };
static int g_on, g_n;
static struct { size_t bytes; char what[40]; } g_call[MAX_CALLS];

void *__real_qlm_calloc(size_t count, size_t size, const char *what, qlm_error *err);
void *__wrap_qlm_calloc(size_t count, size_t size, const char *what, qlm_error *err);
void *__wrap_qlm_calloc(size_t count, size_t size, const char *what, qlm_error *err) {
  if (g_on && g_n < MAX_CALLS) {
    g_call[g_n].bytes = count * size;
    snprintf(g_call[g_n].what, sizeof g_call[g_n].what, "%s", what ? what : "");
    g_n++;
  }
  return __real_qlm_calloc(count, size, what, err);
}

/* qlm_state_new(m, args) under the counter; the table for the same args must match call by call. */
static void check_state(const qlm_model *m, int n_seq, int n_ctx, int max_batch, int n_threads) {
  qlm_state *s = NULL;
  qlm_error e = {0};
  g_n = 0;
  g_on = 1;
  int rc = qlm_state_new(m, n_seq, n_ctx, max_batch, n_threads, &s, &e);
  g_on = 0;
  if (rc) fail_msg("qlm_state_new: %s", e.msg);
  qlm_state_free(s);
  qlm_state_buf bufs[QLM_SB_COUNT];
  qlm_state_buffers(&m->hp, n_seq, n_ctx, max_batch, n_threads, bufs);
  if (g_n != 1 + QLM_SB_COUNT) fail_msg("qlm_state_new made %d allocations, the table lists 1 + %d", g_n, QLM_SB_COUNT);
  assert_string_equal(g_call[0].what, "state"); /* the struct */
  uint64_t kv = 0, scratch = 0, real = 0;
  for (int i = 0; i < QLM_SB_COUNT; i++) {
    uint64_t b = qlm_state_buf_bytes(&bufs[i]);
    if (g_call[1 + i].bytes != b || strcmp(g_call[1 + i].what, bufs[i].what) != 0)
      fail_msg("buffer %d: allocated %zu bytes '%s', table %llu bytes '%s'", i, g_call[1 + i].bytes, g_call[1 + i].what,
               (unsigned long long)b, bufs[i].what);
    *(bufs[i].kv ? &kv : &scratch) += b;
    real += g_call[1 + i].bytes;
  }
  /* the numbers the memory check uses are the same sums */
  assert_int_equal(qlm_state_kv_bytes(&m->hp, n_seq, n_ctx), kv);
  assert_int_equal(qlm_state_bytes(&m->hp, n_seq, n_ctx, max_batch, n_threads), real);
  assert_int_equal(kv + scratch, real);
  /* without n_seq, the scratch is that of one sequence: 2 ints of bookkeeping per extra sequence */
  assert_int_equal(qlm_state_scratch_bytes(&m->hp, n_ctx, max_batch, n_threads) + 2 * sizeof(int) * (uint64_t)(n_seq - 1),
                   scratch);
}

static void test_stories(void **st) {
  (void)st;
  char *path = tu_shared("models/stories260K/stories260K.gguf");
  qlm_source *src = NULL;
  qlm_model *m = NULL;
  qlm_error e = {0};
  assert_int_equal(qlm_source_open(path, NULL, &src, &e), 0);
  assert_int_equal(qlm_model_load(src, &m, &e), 0);
  check_state(m, 1, 0, 0, 0); /* qlm_state_new's defaults */
  check_state(m, 1, 100, 7, 1);
  check_state(m, 8, 93, 512, 2);
  check_state(m, 3, 512, 256, 3);
  /* the closed form of the KV cache: 2 x 4 bytes x n_seq x 5 layers x ctx x 32 kv dims */
  assert_int_equal(qlm_state_kv_bytes(&m->hp, 8, 93), 2ull * 4 * 8 * 5 * 93 * 32);
  qlm_model_free(m);
  qlm_source_close(src);
  free(path);
}

/* The scratch of a state whose rows are not all alike: GPT-2 (no rope) through the hparams only. */
static void test_gpt2_shape(void **st) {
  (void)st;
  qlm_model m = {0};
  m.hp = (qlm_hparams){.arch = QLM_ARCH_GPT2, .n_vocab = 50, .n_embd = 16, .n_ff = 64, .n_layer = 2, .n_head = 4,
                       .n_head_kv = 4, .head_dim = 4, .n_ctx = 32, .rope_style = QLM_ROPE_NONE, .n_rot = 0,
                       .norm_eps = 1e-5f};
  check_state(&m, 2, 32, 5, 1);
  check_state(&m, 1, 0, 0, 2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_stories),
      cmocka_unit_test(test_gpt2_shape),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
