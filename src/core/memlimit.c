/* memlimit.c — available memory (MemAvailable, RLIMIT_AS, RLIMIT_DATA) and the refusal message. */
#include "core/memlimit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static int g_enabled = -1; /* -1: not decided, read QLM_NO_MEM_CHECK */

void qlm_mem_check_set_enabled(bool on) { g_enabled = on; }

bool qlm_mem_check_enabled(void) {
  if (g_enabled < 0) {
    const char *e = getenv("QLM_NO_MEM_CHECK");
    g_enabled = !(e && *e && strcmp(e, "0") != 0);
  }
  return g_enabled;
}

/* The value in kB of "key:" in a /proc file of "key: value kB" lines, in bytes; false if absent. */
static bool proc_kb(const char *path, const char *key, uint64_t *out) {
  FILE *f = fopen(path, "r");
  if (!f) return false;
  char line[256];
  size_t kl = strlen(key);
  bool found = false;
  while (!found && fgets(line, sizeof line, f)) {
    unsigned long long kb;
    if (strncmp(line, key, kl) == 0 && line[kl] == ':' && sscanf(line + kl + 1, "%llu", &kb) == 1) {
      *out = (uint64_t)kb * 1024;
      found = true;
    }
  }
  fclose(f);
  return found;
}

/* Keep the smaller bound. */
static void take(qlm_mem_avail *a, uint64_t bytes, const char *source) {
  if (!a->known || bytes < a->bytes) *a = (qlm_mem_avail){.known = true, .bytes = bytes, .source = source};
}

/* Headroom under a soft resource limit given what the process already uses of it (usage from
 * /proc/self/status): RLIMIT_AS counts all mappings (VmSize), RLIMIT_DATA private writable ones
 * (VmData; Linux >= 4.7), which is where malloc's large blocks live. */
static void rlimit_headroom(qlm_mem_avail *a, int resource, const char *status_key, const char *name) {
  struct rlimit rl;
  uint64_t used;
  if (getrlimit(resource, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return;
  if (!proc_kb("/proc/self/status", status_key, &used)) return;
  take(a, (uint64_t)rl.rlim_cur > used ? (uint64_t)rl.rlim_cur - used : 0, name);
}

qlm_mem_avail qlm_mem_available(void) {
  qlm_mem_avail a = {0};
  const char *ov = getenv("QLM_MEM_AVAILABLE");
  uint64_t v;
  if (ov && *ov) {
    char *end;
    unsigned long long b = strtoull(ov, &end, 10);
    if (end != ov && !*end) take(&a, (uint64_t)b, "QLM_MEM_AVAILABLE");
  } else if (proc_kb("/proc/meminfo", "MemAvailable", &v)) {
    take(&a, v, "MemAvailable");
  }
  rlimit_headroom(&a, RLIMIT_AS, "VmSize", "RLIMIT_AS");
  rlimit_headroom(&a, RLIMIT_DATA, "VmData", "RLIMIT_DATA");
  return a;
}

const char *qlm_mem_human(uint64_t bytes, char *buf, int cap) {
  double b = (double)bytes;
  if (b >= 1024.0 * 1024 * 1024) snprintf(buf, (size_t)cap, "%.1f GiB", b / (1024.0 * 1024 * 1024));
  else if (b >= 1024.0 * 1024) snprintf(buf, (size_t)cap, "%.1f MiB", b / (1024.0 * 1024));
  else if (b >= 1024.0) snprintf(buf, (size_t)cap, "%.1f KiB", b / 1024.0);
  else snprintf(buf, (size_t)cap, "%llu bytes", (unsigned long long)bytes);
  return buf;
}

int qlm_mem_check(const char *file, const qlm_mem_part *parts, int n_parts, const char *hint, qlm_error *err) {
  if (!qlm_mem_check_enabled()) return QLM_OK;
  uint64_t total = 0;
  for (int i = 0; i < n_parts; i++) total = total + parts[i].bytes < total ? UINT64_MAX : total + parts[i].bytes;
  qlm_mem_avail a = qlm_mem_available();
  if (!a.known || total <= a.bytes) return QLM_OK;
  char what[640] = "", h[32], h2[32];
  size_t n = 0;
  for (int i = 0; i < n_parts && n < sizeof what; i++) {
    if (!parts[i].bytes) continue;
    n += (size_t)snprintf(what + n, sizeof what - n, "%s%s %s%s%s", n ? " + " : "", parts[i].what,
                          qlm_mem_human(parts[i].bytes, h, sizeof h), parts[i].detail ? " " : "",
                          parts[i].detail ? parts[i].detail : "");
  }
  return qlm_fail(err, QLM_ELIMIT, "%s: needs %s (%s) but %s is available (%s); %s (--no-mem-check or QLM_NO_MEM_CHECK=1 to try anyway)",
                  file, qlm_mem_human(total, h, sizeof h), what, qlm_mem_human(a.bytes, h2, sizeof h2), a.source,
                  hint ? hint : "free memory or raise the limit");
}
