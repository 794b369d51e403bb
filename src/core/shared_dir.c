/* shared_dir.c — find the shared data folder (the search order is documented in shared_dir.h). */
#include "core/shared_dir.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int is_dir(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Walk up from the executable's folder looking for a sibling "shared" folder; 0 if none. */
static int find_beside_exe(char *out, size_t cap) {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return 0;
  exe[n] = 0;
  char *slash;
  while ((slash = strrchr(exe, '/')) != NULL) {
    *slash = 0; /* exe is now the folder that held the previous component */
    int len = snprintf(out, cap, "%s/shared", exe);
    if (len > 0 && (size_t)len < cap && is_dir(out)) return 1;
  }
  return 0;
}

const char *qlm_shared_dir(void) {
  static char dir[PATH_MAX];
  if (dir[0]) return dir;
  const char *env = getenv("QLM_SHARED");
  if (env && *env)
    snprintf(dir, sizeof dir, "%s", env);
  else if (is_dir("../shared") || !find_beside_exe(dir, sizeof dir))
    snprintf(dir, sizeof dir, "../shared");
  return dir;
}

const char *qlm_shared_path(const char *rel, char *buf, size_t cap) {
  snprintf(buf, cap, "%s/%s", qlm_shared_dir(), rel);
  return buf;
}
