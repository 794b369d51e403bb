/* atomic_file.c — temp file + fsync + rename; see atomic_file.h. */
#include "core/atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { ATOMIC_BUF = 1 << 20 };

uint64_t qlm_atomic_test_fail_after = 0;

static void release(qlm_atomic_file *af) {
  free(af->path);
  free(af->tmp_path);
  free(af->buf);
  af->path = af->tmp_path = NULL;
  af->buf = NULL;
  af->fd = -1;
}

void qlm_atomic_abort(qlm_atomic_file *af) {
  if (af->fd >= 0) close(af->fd);
  if (af->tmp_path) unlink(af->tmp_path);
  release(af);
}

/* The error class of a failed write/open: permission and missing folders are I/O errors too. */
static int io_fail(qlm_atomic_file *af, qlm_error *err, const char *what, int e) {
  qlm_fail(err, QLM_EIO, "%s: %s: %s", af->path, what, strerror(e));
  qlm_atomic_abort(af);
  return QLM_EIO;
}

int qlm_atomic_open(qlm_atomic_file *af, const char *path, qlm_error *err) {
  *af = (qlm_atomic_file){.fd = -1};
  /* an exceeded file-size limit must become an EFBIG error, not a fatal signal */
  signal(SIGXFSZ, SIG_IGN);
  char *copy1 = strdup(path), *copy2 = strdup(path);
  af->path = strdup(path);
  af->buf = malloc(ATOMIC_BUF);
  af->buf_cap = ATOMIC_BUF;
  if (!copy1 || !copy2 || !af->path || !af->buf) {
    free(copy1);
    free(copy2);
    release(af);
    return qlm_fail(err, QLM_ENOMEM, "%s: out of memory opening the output", path);
  }
  const char *dir = dirname(copy1), *base = basename(copy2);
  size_t n = strlen(dir) + strlen(base) + 16;
  af->tmp_path = malloc(n);
  if (af->tmp_path) snprintf(af->tmp_path, n, "%s/.%s.tmp-XXXXXX", dir, base);
  free(copy1);
  free(copy2);
  if (!af->tmp_path) {
    release(af);
    return qlm_fail(err, QLM_ENOMEM, "%s: out of memory opening the output", path);
  }
  struct stat st;
  if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
    release(af);
    return qlm_fail(err, QLM_EIO, "%s: is a directory", path);
  }
  af->fd = mkstemp(af->tmp_path);
  if (af->fd < 0) {
    int e = errno;
    free(af->tmp_path); /* nothing was created: do not unlink a name we do not own */
    af->tmp_path = NULL;
    return io_fail(af, err, "cannot create the output file", e);
  }
  /* mkstemp creates 0600; give the file the permissions a plain create would */
  mode_t um = umask(0);
  umask(um);
  if (fchmod(af->fd, 0666 & ~um) != 0) { /* keep 0600: still a valid output */ }
  return QLM_OK;
}

static int write_all(qlm_atomic_file *af, const unsigned char *p, size_t n, qlm_error *err) {
  while (n > 0) {
    ssize_t w = write(af->fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return io_fail(af, err, "write failed", errno);
    if (w == 0) return io_fail(af, err, "write failed", ENOSPC);
    p += w;
    n -= (size_t)w;
  }
  return QLM_OK;
}

static int flush(qlm_atomic_file *af, qlm_error *err) {
  int rc = write_all(af, af->buf, af->buf_len, err);
  af->buf_len = 0;
  return rc;
}

int qlm_atomic_write(qlm_atomic_file *af, const void *data, size_t n, qlm_error *err) {
  if (af->fd < 0) return qlm_fail(err, QLM_EINTERNAL, "write to a closed output file");
  if (qlm_atomic_test_fail_after && af->written + n > qlm_atomic_test_fail_after)
    return io_fail(af, err, "write failed", ENOSPC);
  af->written += n;
  const unsigned char *p = data;
  while (n > 0) {
    size_t room = af->buf_cap - af->buf_len, k = n < room ? n : room;
    memcpy(af->buf + af->buf_len, p, k);
    af->buf_len += k;
    p += k;
    n -= k;
    if (af->buf_len == af->buf_cap && flush(af, err)) return QLM_EIO;
  }
  return QLM_OK;
}

int qlm_atomic_pad(qlm_atomic_file *af, size_t align, qlm_error *err) {
  static const unsigned char zeros[64];
  size_t pad = (size_t)((align - af->written % align) % align);
  while (pad > 0) {
    size_t k = pad < sizeof zeros ? pad : sizeof zeros;
    if (qlm_atomic_write(af, zeros, k, err)) return QLM_EIO;
    pad -= k;
  }
  return QLM_OK;
}

int qlm_atomic_commit(qlm_atomic_file *af, qlm_error *err) {
  if (af->fd < 0) return qlm_fail(err, QLM_EINTERNAL, "commit of a closed output file");
  if (flush(af, err)) return QLM_EIO;
  if (fsync(af->fd) != 0) return io_fail(af, err, "fsync failed", errno);
  int fd = af->fd;
  af->fd = -1;
  if (close(fd) != 0) return io_fail(af, err, "close failed", errno);
  if (rename(af->tmp_path, af->path) != 0) return io_fail(af, err, "cannot rename the temporary file over it", errno);
  /* make the rename itself durable */
  char *copy = strdup(af->path);
  if (copy) {
    int dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
      fsync(dfd);
      close(dfd);
    }
    free(copy);
  }
  release(af);
  return QLM_OK;
}
