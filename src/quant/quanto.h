/* quanto.h — optimum-quanto's pieces (quant/quanto.c), exposed for tests and tools. */
#ifndef QLM_QUANTO_H
#define QLM_QUANTO_H

#include "quant/method.h"

/* The static input scale quanto's Calibration() leaves in a QLinear after forward calls whose
 * inputs had absolute maxima call_absmax[0..n) (in call order), in `dtype` (QLM_DTYPE_*, the
 * model's float type; every step rounded to it as torch does):
 *   new_k = max|x| / 127;   scale = new_0;   scale = 0.9 scale + (1 - 0.9) new_k  for k >= 1
 * with quanto's quirk that a running scale equal to 1 (its initial value) is replaced, not
 * averaged.  Returns 1 (quanto's untouched default) when n == 0. */
float qlm_quanto_input_scale(const float *call_absmax, int n, int dtype);

/* x -> s * clamp(round(x / s), -128, 127) (ties to even), what the model does to the input of a
 * linear with a static int8 scale s (model/model.h, qlm_lin_in). */
float qlm_quanto_fake_quant_act(float x, float s);

#endif
