/* test_core.c — error reporting, checked arithmetic, fp16/bf16 conversion. */
#include "testutil.h"

#include <math.h>
#include <string.h>

#include "core/error.h"
#include "core/fp16.h"

static void test_fail_message(void **st) {
  (void)st;
  qlm_error e = {0};
  int rc = qlm_fail(&e, QLM_EFORMAT, "%s: bad magic", "x.gguf");
  assert_int_equal(rc, QLM_EFORMAT);
  assert_string_equal(e.msg, "x.gguf: bad magic");
  qlm_fail_prefix(&e, "loading %s", "model");
  assert_string_equal(e.msg, "loading model: x.gguf: bad magic");
}

static void test_overflow(void **st) {
  (void)st;
  size_t r;
  assert_true(qlm_mul_overflow(SIZE_MAX / 2, 3, &r));
  assert_false(qlm_mul_overflow(1000, 1000, &r));
  assert_int_equal(r, 1000000);
  assert_true(qlm_add_overflow(SIZE_MAX, 1, &r));
}

/* f16: every one of the 65536 bit patterns round-trips through f32 (NaNs stay NaN). */
static void test_f16_roundtrip_all(void **st) {
  (void)st;
  for (uint32_t h = 0; h < 65536; h++) {
    float f = qlm_f16_to_f32((uint16_t)h);
    if (isnan(f)) {
      assert_true(isnan(qlm_f16_to_f32(qlm_f32_to_f16(f))));
      continue;
    }
    assert_int_equal(qlm_f32_to_f16(f), h);
  }
}

static void test_f16_known_values(void **st) {
  (void)st;
  /* values from the IEEE 754 binary16 definition */
  assert_true(qlm_f16_to_f32(0x3c00) == 1.0f);
  assert_true(qlm_f16_to_f32(0xc000) == -2.0f);
  assert_true(qlm_f16_to_f32(0x7bff) == 65504.0f);
  assert_true(qlm_f16_to_f32(0x0001) == ldexpf(1.0f, -24));
  assert_true(qlm_f16_to_f32(0x3555) == 0.333251953125f);
  assert_int_equal(qlm_f32_to_f16(65520.0f), 0x7c00);  /* rounds to inf */
  assert_int_equal(qlm_f32_to_f16(1.0f + ldexpf(1.0f, -11)), 0x3c00); /* tie -> even */
  assert_int_equal(qlm_f32_to_f16(1.0f + 3 * ldexpf(1.0f, -11)), 0x3c02);
  assert_true(qlm_bf16_to_f32(0x3f80) == 1.0f);
  assert_int_equal(qlm_f32_to_bf16(1.00390625f), 0x3f80); /* tie -> even */
  assert_int_equal(qlm_f32_to_bf16(1.01171875f), 0x3f82);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fail_message),
      cmocka_unit_test(test_overflow),
      cmocka_unit_test(test_f16_roundtrip_all),
      cmocka_unit_test(test_f16_known_values),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
