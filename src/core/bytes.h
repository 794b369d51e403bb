/* bytes.h — little-endian loads and stores of block fields (block layouts are byte arrays with no
 * alignment guarantee, so fields are read byte by byte; compilers turn these into single moves). */
#ifndef QLM_BYTES_H
#define QLM_BYTES_H

#include <stdint.h>
#include <string.h>

#include "core/fp16.h"

static inline uint16_t qlm_rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t qlm_rd32(const uint8_t *p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline float qlm_rdhalf(const uint8_t *p) { return qlm_f16_to_f32(qlm_rd16(p)); }
static inline float qlm_rdf32(const uint8_t *p) {
  float f;
  memcpy(&f, p, 4);
  return f;
}
static inline void qlm_wr16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
}
static inline void qlm_wr32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline void qlm_wrhalf(uint8_t *p, float f) { qlm_wr16(p, qlm_f32_to_f16(f)); }

#endif
