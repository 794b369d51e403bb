/* numerics.c — NaN/Inf guards (numerics.h). */
#include "model/numerics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/fp16.h"
#include "kernels/types.h"

static bool g_allow = false;

void qlm_set_allow_nonfinite(bool allow) { g_allow = allow; }

bool qlm_allow_nonfinite(void) {
  const char *e = getenv("QLM_ALLOW_NONFINITE");
  return g_allow || (e && *e && strcmp(e, "0") != 0);
}

static const char *kind_f32(uint32_t u) {
  return (u & 0x007FFFFFu) ? "NaN" : (u >> 31) ? "-Inf" : "+Inf";
}
static const char *kind_f16(uint16_t h) {
  return (h & 0x03FFu) ? "NaN" : (h >> 15) ? "-Inf" : "+Inf";
}

/* Counting loops without early exit so they vectorize; the offender is located only on failure. */
/* (memcpy keeps the type punning defined; compilers turn it into plain vector loads.) */
static size_t count_bad_u32(const void *p, size_t n, uint32_t mask) {
  const unsigned char *b = p;
  size_t bad = 0;
  for (size_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, b + 4 * i, 4);
    bad += (u & mask) == mask;
  }
  return bad;
}
static size_t count_bad_u16(const void *p, size_t n, uint16_t mask) {
  const unsigned char *b = p;
  size_t bad = 0;
  for (size_t i = 0; i < n; i++) {
    uint16_t h;
    memcpy(&h, b + 2 * i, 2);
    bad += (h & mask) == mask;
  }
  return bad;
}

static int elem_fail(const qlm_tensor *t, const char *path, int64_t i, const char *kind, qlm_error *err) {
  int64_t cols = t->ne[0] > 0 ? t->ne[0] : 1;
  return qlm_fail(err, QLM_EFORMAT,
                  "%s: tensor '%s': element %lld (row %lld, col %lld) is %s (use --allow-nonfinite to load anyway)",
                  path, t->name, (long long)i, (long long)(i / cols), (long long)(i % cols), kind);
}

static int check_plain(const qlm_tensor *t, const char *path, qlm_error *err) {
  if (t->type == QLM_TYPE_F32) {
    size_t n = t->nbytes / 4;
    uint32_t u;
    if (!count_bad_u32(t->data, n, 0x7F800000u)) return QLM_OK;
    for (size_t i = 0; i < n; i++) {
      memcpy(&u, (const char *)t->data + 4 * i, 4);
      if ((u & 0x7F800000u) == 0x7F800000u) return elem_fail(t, path, (int64_t)i, kind_f32(u), err);
    }
  } else { /* f16 or bf16 */
    uint16_t mask = t->type == QLM_TYPE_F16 ? 0x7C00u : 0x7F80u;
    size_t n = t->nbytes / 2;
    if (!count_bad_u16(t->data, n, mask)) return QLM_OK;
    for (size_t i = 0; i < n; i++) {
      uint16_t h;
      memcpy(&h, (const char *)t->data + 2 * i, 2);
      if ((h & mask) == mask)
        return elem_fail(t, path, (int64_t)i,
                         t->type == QLM_TYPE_F16 ? kind_f16(h) : kind_f32((uint32_t)h << 16), err);
    }
  }
  return QLM_OK;
}

/* Where ggml's block types keep their scales: up to two f16 fields (or one f32 for Q8_K). */
typedef struct scale_layout {
  int type;
  size_t type_size;
  int off[2];         /* byte offsets of the scales in a block; -1 = none */
  const char *name[2];
  bool f32;           /* Q8_K: one f32 d */
} scale_layout;

static const scale_layout k_layouts[] = {
  {QLM_TYPE_Q4_0, 18, {0, -1}, {"d", NULL}, false},   {QLM_TYPE_Q4_1, 20, {0, 2}, {"d", "m"}, false},
  {QLM_TYPE_Q5_0, 22, {0, -1}, {"d", NULL}, false},   {QLM_TYPE_Q5_1, 24, {0, 2}, {"d", "m"}, false},
  {QLM_TYPE_Q8_0, 34, {0, -1}, {"d", NULL}, false},   {QLM_TYPE_Q8_1, 36, {0, 2}, {"d", "s"}, false},
  {QLM_TYPE_Q2_K, 84, {80, 82}, {"d", "dmin"}, false}, {QLM_TYPE_Q3_K, 110, {108, -1}, {"d", NULL}, false},
  {QLM_TYPE_Q4_K, 144, {0, 2}, {"d", "dmin"}, false}, {QLM_TYPE_Q5_K, 176, {0, 2}, {"d", "dmin"}, false},
  {QLM_TYPE_Q6_K, 210, {208, -1}, {"d", NULL}, false}, {QLM_TYPE_Q8_K, 292, {0, -1}, {"d", NULL}, true},
};

static int check_blocks(const qlm_tensor *t, const scale_layout *L, const char *path, qlm_error *err) {
  const unsigned char *p = t->data;
  size_t nb = t->nbytes / L->type_size;
  for (int f = 0; f < 2 && L->off[f] >= 0; f++) {
    /* One pass per field over a strided load: cheap next to reading the weights at all. */
    size_t bad = 0;
    if (L->f32) {
      for (size_t b = 0; b < nb; b++) {
        uint32_t u;
        memcpy(&u, p + b * L->type_size + (size_t)L->off[f], 4);
        bad += (u & 0x7F800000u) == 0x7F800000u;
      }
    } else {
      for (size_t b = 0; b < nb; b++) {
        uint16_t h;
        memcpy(&h, p + b * L->type_size + (size_t)L->off[f], 2);
        bad += (h & 0x7C00u) == 0x7C00u;
      }
    }
    if (!bad) continue;
    for (size_t b = 0; b < nb; b++) {
      uint32_t u = 0;
      uint16_t h = 0;
      const char *kind = NULL;
      if (L->f32) {
        memcpy(&u, p + b * L->type_size + (size_t)L->off[f], 4);
        if ((u & 0x7F800000u) == 0x7F800000u) kind = kind_f32(u);
      } else {
        memcpy(&h, p + b * L->type_size + (size_t)L->off[f], 2);
        if ((h & 0x7C00u) == 0x7C00u) kind = kind_f16(h);
      }
      if (kind)
        return qlm_fail(err, QLM_EFORMAT, "%s: tensor '%s': block %zu scale %s is %s (use --allow-nonfinite to load anyway)",
                        path, t->name, b, L->name[f], kind);
    }
  }
  return QLM_OK;
}

/* qlm's own types: dequantize a row at a time and look at the values. */
static int check_dequant(const qlm_tensor *t, const char *path, qlm_error *err) {
  int64_t cols = t->ne[0], rows = 1;
  for (int d = 1; d < 4; d++) rows *= t->ne[d] > 0 ? t->ne[d] : 1;
  size_t rb = qlm_type_row_bytes(t->type, cols);
  if (cols <= 0 || rb == 0 || rb * (size_t)rows > t->nbytes) return QLM_OK; /* not row-addressable: the reader vouched for it */
  float *row = qlm_malloc((size_t)cols * sizeof *row, "non-finite check row", err);
  if (!row) return QLM_ENOMEM;
  int rc = QLM_OK;
  for (int64_t r = 0; r < rows && !rc; r++) {
    if (!qlm_dequantize(t->type, (const char *)t->data + (size_t)r * rb, row, cols)) break; /* no dequantizer */
    int64_t i = qlm_first_nonfinite(row, cols);
    if (i >= 0) {
      uint32_t u;
      memcpy(&u, &row[i], 4);
      rc = qlm_fail(err, QLM_EFORMAT,
                    "%s: tensor '%s': element %lld (row %lld, col %lld) dequantizes to %s: a scale is not finite "
                    "(use --allow-nonfinite to load anyway)",
                    path, t->name, (long long)(r * cols + i), (long long)r, (long long)i, kind_f32(u));
    }
  }
  free(row);
  return rc;
}

int qlm_check_tensor_finite(const qlm_tensor *t, const char *path, qlm_error *err) {
  if (!t->data || !t->nbytes) return QLM_OK;
  if (t->type == QLM_TYPE_F32 || t->type == QLM_TYPE_F16 || t->type == QLM_TYPE_BF16) return check_plain(t, path, err);
  if (t->type == QLM_TYPE_I8) return QLM_OK;
  for (size_t i = 0; i < sizeof k_layouts / sizeof *k_layouts; i++) {
    if (k_layouts[i].type != t->type) continue;
    const qlm_type_traits *tr = qlm_type_traits_of(t->type);
    if (!tr || tr->type_size != k_layouts[i].type_size) return QLM_OK; /* layout not the one known here */
    return check_blocks(t, &k_layouts[i], path, err);
  }
  /* Dequantizing costs about as much as a forward pass over the weights (seconds on SmolLM2 in a
   * Debug build), so qlm's own types are checked only on request (QLM_CHECK_WEIGHTS=full). */
  const char *full = getenv("QLM_CHECK_WEIGHTS");
  if (t->type >= QLM_TYPE_QLM_BASE && full && !strcmp(full, "full")) return check_dequant(t, path, err);
  return QLM_OK;
}

int qlm_check_source_finite(const qlm_source *src, qlm_error *err) {
  for (int i = 0; i < src->n_tensors; i++) {
    int rc = qlm_check_tensor_finite(&src->tensors[i], src->path, err);
    if (rc) return rc;
  }
  return QLM_OK;
}

int qlm_check_weights_on_load(const qlm_source *src, qlm_error *err) {
  return qlm_allow_nonfinite() ? QLM_OK : qlm_check_source_finite(src, err);
}

int64_t qlm_first_nonfinite(const float *x, int64_t n) {
  if (n <= 0 || !count_bad_u32(x, (size_t)n, 0x7F800000u)) return -1;
  for (int64_t i = 0; i < n; i++)
    if (!isfinite(x[i])) return i;
  return -1;
}

int qlm_check_logits(const float *logits, int n_vocab, int64_t pos, const char *what, qlm_error *err) {
  if (qlm_allow_nonfinite()) return QLM_OK;
  int64_t i = qlm_first_nonfinite(logits, n_vocab);
  if (i < 0) return QLM_OK;
  int64_t bad = 0;
  for (int k = 0; k < n_vocab; k++) bad += !isfinite(logits[k]);
  uint32_t u;
  memcpy(&u, &logits[i], 4);
  return qlm_fail(err, QLM_EINTERNAL,
                  "%s: logits at position %lld are not finite: output %lld (token id) is %s, %lld of %d outputs "
                  "non-finite (use --allow-nonfinite to go on)",
                  what, (long long)pos, (long long)i, kind_f32(u), (long long)bad, n_vocab);
}
