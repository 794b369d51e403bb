/* fuzz_common.h — helpers shared by the libFuzzer harnesses in fuzz/.
 *
 * The readers take paths, so each input is written to a file in a private tmpfs folder
 * (/dev/shm when it exists) that is created once per process and reused: this keeps the
 * readers' interfaces unchanged and still costs only a write() per execution.
 * Each harness defines LLVMFuzzerTestOneInput; with -DQLM_FUZZ=ON it links libFuzzer's main,
 * otherwise fuzz/driver.c replays files (tests/fuzz-regressions) through it. */
#ifndef QLM_FUZZ_COMMON_H
#define QLM_FUZZ_COMMON_H

#include <dirent.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Remove the scratch folder and what the harness left in it (at normal exit). */
static char fuzz_dir_path[64];
static inline void fuzz_cleanup(void) {
  DIR *d = opendir(fuzz_dir_path);
  if (d) {
    struct dirent *e;
    char p[sizeof fuzz_dir_path + 256 + 2];
    while ((e = readdir(d)))
      if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
        snprintf(p, sizeof p, "%s/%s", fuzz_dir_path, e->d_name);
        unlink(p);
      }
    closedir(d);
  }
  rmdir(fuzz_dir_path);
}

/* The per-process scratch folder (created on first use; aborts if it cannot be: a harness
 * without a place for its input cannot test anything). */
static inline const char *fuzz_dir(void) {
  char *dir = fuzz_dir_path;
  if (!dir[0]) {
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(dir, sizeof fuzz_dir_path, "%s/qlm-fuzz-XXXXXX", base);
    if (!mkdtemp(dir)) {
      perror("fuzz: mkdtemp");
      abort();
    }
    atexit(fuzz_cleanup);
  }
  return dir;
}

/* Write data to <fuzz_dir>/<name> (replacing it); returns the path (static buffer per name slot). */
static inline const char *fuzz_write(const char *name, const uint8_t *data, size_t size, char *path, size_t cap) {
  snprintf(path, cap, "%s/%s", fuzz_dir(), name);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) {
    perror(path);
    abort();
  }
  size_t done = 0;
  while (done < size) {
    ssize_t w = write(fd, data + done, size - done);
    if (w <= 0) {
      perror(path);
      abort();
    }
    done += (size_t)w;
  }
  close(fd);
  return path;
}

/* A file under ../shared: $QLM_SHARED/rel, else the folder CMake knew at build time. */
static inline const char *fuzz_shared(const char *rel, char *path, size_t cap) {
  const char *base = getenv("QLM_SHARED");
#ifdef QLM_FUZZ_SHARED_DIR
  if (!base) base = QLM_FUZZ_SHARED_DIR;
#endif
  if (!base) base = "../shared";
  snprintf(path, cap, "%s/%s", base, rel);
  return path;
}

/* Touch every byte of a buffer a reader claims is valid, so ASan or a SEGV catches a span that
 * reaches outside the file or an allocation. */
static inline unsigned fuzz_touch(const void *p, size_t n) {
  const volatile uint8_t *b = p;
  unsigned acc = 0;
  if (!p) return 0;
  for (size_t i = 0; i < n; i += 61) acc += b[i];
  if (n) acc += b[n - 1];
  return acc;
}

#endif
