/* atomic_file.h — write a file so that readers see either the old file or the whole new one.
 *
 * The data goes to a temporary file in the destination's directory (".NAME.tmp-XXXXXX");
 * qlm_atomic_commit flushes it, fsyncs it and renames it over the destination (rename within
 * one file system is atomic), then fsyncs the directory.  On any error — or qlm_atomic_abort —
 * the temporary file is removed and the destination is left untouched.  Errors name the path
 * (disk full, permission denied, file size limit, ...).
 *
 * SIGXFSZ is ignored while a file is open so that exceeding a file-size limit (ulimit -f) makes
 * write() fail with EFBIG, which is reported, instead of killing the process. */
#ifndef QLM_ATOMIC_FILE_H
#define QLM_ATOMIC_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

typedef struct qlm_atomic_file {
  char *path;      /* destination */
  char *tmp_path;  /* temporary file beside it */
  int fd;          /* -1 when closed */
  unsigned char *buf; /* [buf_cap] write buffer */
  size_t buf_len, buf_cap;
  uint64_t written;   /* bytes handed to qlm_atomic_write so far */
} qlm_atomic_file;

/* Create the temporary file for `path`. On failure nothing is left behind. */
int qlm_atomic_open(qlm_atomic_file *af, const char *path, qlm_error *err);
/* Append n bytes (buffered). On failure the caller must still call qlm_atomic_abort. */
int qlm_atomic_write(qlm_atomic_file *af, const void *data, size_t n, qlm_error *err);
/* Append zero bytes until the file length is a multiple of `align`. */
int qlm_atomic_pad(qlm_atomic_file *af, size_t align, qlm_error *err);
/* Flush, fsync, rename over the destination. On failure the temporary file is removed.
 * Either way af is released afterwards. */
int qlm_atomic_commit(qlm_atomic_file *af, qlm_error *err);
/* Discard: close and remove the temporary file (safe after a failed or successful commit). */
void qlm_atomic_abort(qlm_atomic_file *af);

/* Test hook: when nonzero, writes fail with ENOSPC once the file would exceed this many bytes
 * (simulates a full disk midway through a file). */
extern uint64_t qlm_atomic_test_fail_after;

#endif
