/* memlimit.h — how much memory a command may still allocate, and a refusal that says so.
 *
 * Loads that convert weights (f16/bf16 -> f32, QLM_DEQUANT_ALL, NF4/FP4 double-quantization
 * expansion) and large KV caches can need more memory than the machine has; without a check the
 * first sign is the OOM killer or swap thrash.  qlm adds up what it is about to allocate
 * (mmap'd file data is not counted: it is backed by the file) and compares it with
 *   available = min(MemAvailable in /proc/meminfo,
 *                   RLIMIT_AS soft limit - VmSize      when that limit is set,
 *                   RLIMIT_DATA soft limit - VmData    when that limit is set)
 * before allocating anything.  A need above that is QLM_ELIMIT with one message naming the
 * file, the need by part and what was available, e.g.
 *   m.gguf: needs 31.2 GiB (weights converted to f32 28.0 GiB + KV cache 3.2 GiB at --ctx 8192)
 *   but 20.1 GiB is available (MemAvailable); use a smaller --ctx or a quantized file ...
 *
 * Environment:
 *   QLM_NO_MEM_CHECK=1        skip the check (the CLI flag --no-mem-check sets the same switch)
 *   QLM_MEM_AVAILABLE=BYTES   use BYTES instead of MemAvailable (a test override: AddressSanitizer
 *                             builds reserve terabytes of address space, so RLIMIT_AS/RLIMIT_DATA
 *                             cannot be used to test them; also for a user's own budget) */
#ifndef QLM_MEMLIMIT_H
#define QLM_MEMLIMIT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"

typedef struct qlm_mem_avail {
  bool known;          /* false when nothing could be read: no check is made */
  uint64_t bytes;      /* what may still be allocated */
  const char *source;  /* which bound gave it: "MemAvailable", "QLM_MEM_AVAILABLE", "RLIMIT_AS", "RLIMIT_DATA" */
} qlm_mem_avail;

/* The smallest of the bounds above that can be read. */
qlm_mem_avail qlm_mem_available(void);

/* One part of a need, for the message ("weights converted to f32", "KV cache", ...). */
typedef struct qlm_mem_part {
  const char *what;    /* label; a part with bytes == 0 is left out of the message */
  uint64_t bytes;
  const char *detail;  /* appended after the size, e.g. "at --ctx 8192", or NULL */
} qlm_mem_part;

/* QLM_OK when the sum of parts fits what is available (or the check is off, or nothing can be
 * read); else QLM_ELIMIT with "file: needs ... but ... is available (source); hint". */
int qlm_mem_check(const char *file, const qlm_mem_part *parts, int n_parts, const char *hint, qlm_error *err);

/* The switch --no-mem-check turns off (default: on unless QLM_NO_MEM_CHECK is set and not "0"). */
void qlm_mem_check_set_enabled(bool on);
bool qlm_mem_check_enabled(void);

/* "31.2 GiB", "12.0 MiB", "512 bytes" into buf (returns buf). */
const char *qlm_mem_human(uint64_t bytes, char *buf, int cap);

#endif
