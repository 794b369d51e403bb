#include "core/mapfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int qlm_map_file(const char *path, qlm_mapfile *m, qlm_error *err) {
  m->data = NULL;
  m->size = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return qlm_fail(err, QLM_EIO, "%s: cannot open: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    return qlm_fail(err, QLM_EIO, "%s: cannot stat: %s", path, strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return qlm_fail(err, QLM_EIO, "%s: not a regular file", path);
  }
  if (st.st_size > 0) {
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      close(fd);
      return qlm_fail(err, QLM_EIO, "%s: cannot mmap %lld bytes: %s", path, (long long)st.st_size, strerror(e));
    }
    m->data = p;
    m->size = (size_t)st.st_size;
  }
  close(fd);
  return QLM_OK;
}

void qlm_unmap_file(qlm_mapfile *m) {
  if (m->data) munmap((void *)m->data, m->size);
  m->data = NULL;
  m->size = 0;
}

int qlm_read_file(const char *path, size_t max_bytes, char **out, size_t *len, qlm_error *err) {
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) return qlm_fail(err, QLM_EIO, "%s: cannot open: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
    fclose(f);
    return qlm_fail(err, QLM_EIO, "%s: not a regular file", path);
  }
  if ((unsigned long long)st.st_size > max_bytes) {
    fclose(f);
    return qlm_fail(err, QLM_ELIMIT, "%s: file is %lld bytes, more than the %zu allowed for this kind of file", path,
                    (long long)st.st_size, max_bytes);
  }
  size_t n = (size_t)st.st_size;
  char *buf = qlm_malloc(n + 1, path, err);
  if (!buf) {
    fclose(f);
    return QLM_ENOMEM;
  }
  if (n && fread(buf, 1, n, f) != n) {
    free(buf);
    fclose(f);
    return qlm_fail(err, QLM_EIO, "%s: read error", path);
  }
  fclose(f);
  buf[n] = 0;
  *out = buf;
  if (len) *len = n;
  return QLM_OK;
}
