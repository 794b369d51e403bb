/* sha256.h — SHA-256 (FIPS 180-4) of memory and of files, for the results database's artefacts. */
#ifndef QLM_SHA256_H
#define QLM_SHA256_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

typedef struct qlm_sha256 {
  uint32_t h[8];       /* chaining state */
  uint64_t n_bytes;    /* message length so far */
  uint8_t buf[64];     /* partial block */
  size_t n_buf;
} qlm_sha256;

void qlm_sha256_init(qlm_sha256 *s);
void qlm_sha256_update(qlm_sha256 *s, const void *data, size_t n);
void qlm_sha256_final(qlm_sha256 *s, uint8_t out[32]);
/* Lower-case hex digest (65 bytes with the NUL). */
void qlm_sha256_hex(const void *data, size_t n, char hex[65]);
/* Digest of a regular file's contents, read in blocks (models are GBs: no whole-file buffer). */
int qlm_sha256_file(const char *path, char hex[65], qlm_error *err);

#endif
