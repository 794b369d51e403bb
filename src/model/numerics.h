/* numerics.h — guards against NaN/Inf in weights (at load) and in outputs (during evaluation).
 *
 * A model file with a single NaN weight or block scale silently turns every perplexity into NaN;
 * qlm_model_load therefore scans the source's tensors once (qlm_check_source_finite) and fails
 * naming the tensor and the element or block, unless non-finite values are allowed:
 * qlm_set_allow_nonfinite(true) (the CLI's --allow-nonfinite) or QLM_ALLOW_NONFINITE=1 in the
 * environment.
 *
 * What is scanned: every element of f32/f16/bf16 tensors; the f16/f32 scales (d, and the min or
 * sum m/dmin/s) of every block of ggml's block types (Q4_0..Q8_1, Q2_K..Q8_K) — the quants
 * themselves are small integers and cannot be non-finite.  qlm's own types keep their scales in
 * per-family layouts, so they are checked by dequantizing row by row, which costs as much as a
 * pass over the weights: only when QLM_CHECK_WEIGHTS=full is set.
 * The loops are plain integer tests on the exponent bits, which the compiler vectorizes.
 * Cost on SmolLM2-135M-Instruct Q4_1 (272 tensors, 4.2 M blocks, -O3): 20 ms with the file in the
 * page cache, 51 ms cold (the first touch of each page); absmax8 (a qlm type) with
 * QLM_CHECK_WEIGHTS=full: about 3 s against a Debug library — hence opt-in. */
#ifndef QLM_NUMERICS_H
#define QLM_NUMERICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "formats/source.h"

/* Process-wide switch (default false; QLM_ALLOW_NONFINITE=1 also turns it on). */
void qlm_set_allow_nonfinite(bool allow);
bool qlm_allow_nonfinite(void);

/* QLM_OK if every weight/scale of t is finite; else QLM_EFORMAT with
 * "<path>: tensor '<name>': element 12 (row 0, col 12) is NaN" or "... block 7 scale d is +Inf". */
int qlm_check_tensor_finite(const qlm_tensor *t, const char *path, qlm_error *err);
/* Every tensor of src (the first offender is reported). */
int qlm_check_source_finite(const qlm_source *src, qlm_error *err);
/* What qlm_model_load calls: the check above unless qlm_allow_nonfinite(). */
int qlm_check_weights_on_load(const qlm_source *src, qlm_error *err);

/* Index of the first non-finite value of x[0..n), or -1. */
int64_t qlm_first_nonfinite(const float *x, int64_t n);
/* For evaluations: QLM_OK when logits[0..n_vocab) are finite (or non-finite values are allowed),
 * else QLM_EINTERNAL naming what (`what`, e.g. "perplexity"), the position and the output index:
 * "perplexity: logits at position 17 are not finite: output 4 (token id) is NaN ...". */
int qlm_check_logits(const float *logits, int n_vocab, int64_t pos, const char *what, qlm_error *err);

#endif
