/* error.h — how every qlm function reports failure.
 *
 * A function that can fail returns an int: 0 on success, or one of the error classes
 * below.  It writes a one-line, human-readable message into the caller's qlm_error,
 * always naming the file (or option) and what is wrong with it, e.g.
 *   "model.gguf: tensor 'blk.0.attn_q.weight': data offset 991232 + 16384 bytes is past end of file (1000000 bytes)".
 * The CLI prints the message and exits with the class as its exit status, so the exit
 * codes are documented in `qlm --help`. */
#ifndef QLM_ERROR_H
#define QLM_ERROR_H

#include <stddef.h>

enum qlm_errclass {
  QLM_OK = 0,
  QLM_EUSAGE = 2,       /* bad command line / option value */
  QLM_EIO = 3,          /* cannot open, read, map or write a file */
  QLM_EFORMAT = 4,      /* file is malformed: bad magic, truncated, inconsistent sizes, bad JSON, bad UTF-8 */
  QLM_EUNSUPPORTED = 5, /* well-formed but uses something qlm does not implement (arch, dtype, version) */
  QLM_ELIMIT = 6,       /* a declared size exceeds a sanity limit or available memory */
  QLM_ENOMEM = 7,       /* allocation failed */
  QLM_EINTERNAL = 8,    /* a bug: an invariant did not hold */
};

typedef struct qlm_error {
  int code;       /* one of qlm_errclass; QLM_OK when nothing failed */
  char msg[1024]; /* NUL-terminated message, without trailing newline */
} qlm_error;

/* Record an error (printf-style message) and return its code, so callers can write
 *   if (n > max) return qlm_fail(err, QLM_EFORMAT, "%s: n_tokens %lld exceeds %d", path, n, max);
 * err may be NULL (the message is dropped). */
int qlm_fail(qlm_error *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Prefix the existing message with "prefix: " (used to add context while unwinding). */
int qlm_fail_prefix(qlm_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Name of an error class, for --help and logs. */
const char *qlm_errclass_name(int code);

/* malloc/calloc that never return NULL silently: on failure they record QLM_ENOMEM in err
 * (naming what was being allocated) and return NULL. */
void *qlm_malloc(size_t n, const char *what, qlm_error *err);
void *qlm_calloc(size_t count, size_t size, const char *what, qlm_error *err);

/* Checked size arithmetic: return 1 (and leave *out unspecified) on overflow. */
static inline int qlm_mul_overflow(size_t a, size_t b, size_t *out) { return __builtin_mul_overflow(a, b, out); }
static inline int qlm_add_overflow(size_t a, size_t b, size_t *out) { return __builtin_add_overflow(a, b, out); }

#endif
