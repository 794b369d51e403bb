/* kl.h — KL divergence of a model's next-token distributions to a base model's, as llama.cpp's
 * perplexity --kl-divergence does, with the base distributions stored compactly on disk.
 *
 * `qlm ppl --save-logits base.bin` on the base model writes one record per scored token;
 * `qlm ppl --kl-base base.bin` on another model (same tokenizer, text and protocol) compares each
 * of its distributions Q to the stored base P:
 *   KL(P||Q) = sum_i P_i (log P_i - log Q_i) over the base's top-k tokens, plus the remainder
 *              bucket P_rest (log P_rest - log Q_rest) with Q_rest = 1 - sum of Q over those tokens.
 * Merging the tail into one bucket can only lower the divergence (it is exact when the tail mass
 * is 0), and with k = 32 the tail of a trained model carries little mass.
 *
 * File format (little-endian; version 1):
 *   header, 64 bytes:
 *     0  char[8]  magic "QLMKLD1\0"
 *     8  u32      version = 1
 *    12  u32      n_vocab
 *    16  u32      k, tokens kept per record (1..1024, <= n_vocab)
 *    20  u32      protocol id (qlm_ppl_protocol)
 *    24  u32      window, 28 u32 stride (protocol settings; 0 when not used)
 *    32  u64      n_records (tokens scored)
 *    40  u64      fingerprint: FNV-1a 64 of the scored target token ids, in order (little-endian i32)
 *    48  u8[16]   zero
 *   then n_records records of 12 + 8k bytes:
 *     i32 target; f32 nll = -log P(target); f32 log_rest = log P_rest (-inf when the tail is empty);
 *     k x { i32 id; f32 log P(id) }, ids distinct and in range, log-probabilities non-increasing.
 * The reader checks the size (header + n_records * record size exactly), every field of every
 * record as it is consumed, and that the records match the plan being scored.
 *
 * Streaming (qlm ppl): the writer does not know n_records before the text is scored, so
 * qlm_kl_writer_open_stream writes n_records = 2^64-1 and fingerprint 0 as placeholders and
 * commit patches both into the temporary file before the atomic rename; a file that still holds
 * the placeholder (or any other wrong count) fails the size check: "%llu records of %zu bytes do
 * not fill the file of %zu bytes" (exit 4).  The format is unchanged (version 1): files written
 * either way read either way.  qlm_kl_reader_open_stream reads records one at a time (the file is
 * never loaded whole), compares each record's target with the token this run scores (the first
 * difference stops the run, naming the record), and at finish checks the count and that the
 * targets hash to the header's fingerprint ("the records' target tokens do not match the header's
 * fingerprint", exit 4).  The per-token KL values for median/p99 stay in memory up to 2^20 of them
 * and then go to an unlinked temporary file, whose order statistics are selected exactly. */
#ifndef QLM_KL_H
#define QLM_KL_H

#include <stdint.h>

#include "core/error.h"
#include "eval/ppl.h"

enum { QLM_KL_HEADER_BYTES = 64, QLM_KL_MAX_K = 1024, QLM_KL_DEFAULT_K = 32 };

typedef struct qlm_kl_header {
  uint32_t n_vocab, k, protocol, window, stride;
  uint64_t n_records, fingerprint;
} qlm_kl_header;

/* Tokens the first n_win windows of the plan score, and their fingerprint (FNV-1a, initial value
 * 14695981039346656037). */
void qlm_kl_plan_fingerprint(const qlm_ppl_plan *p, int64_t n_win, uint64_t *n_records, uint64_t *fingerprint);

/* Writer: records go to a temporary file renamed over `path` by commit (core/atomic_file.h). */
typedef struct qlm_kl_writer qlm_kl_writer;
int qlm_kl_writer_open(qlm_kl_writer **out, const char *path, const qlm_kl_header *h, qlm_error *err);
/* The same, for a stream: h->n_records and h->fingerprint are ignored, counted as records are
 * added and written into the header at commit. */
int qlm_kl_writer_open_stream(qlm_kl_writer **out, const char *path, const qlm_kl_header *h, qlm_error *err);
/* One scored token: its target and the row's logits [n_vocab] with their log-sum-exp. */
int qlm_kl_writer_add(qlm_kl_writer *w, int32_t target, const float *logits, double lse, qlm_error *err);
/* Checks that n_records were added (announced), patches the header, then commits. The writer is freed either way. */
int qlm_kl_writer_commit(qlm_kl_writer *w, qlm_error *err);
void qlm_kl_writer_abort(qlm_kl_writer *w);

/* Statistics of the comparison, llama.cpp's names in comments. */
typedef struct qlm_kl_stats {
  int64_t n;                 /* tokens compared */
  double kld_mean, kld_err;  /* mean KLD and its standard error */
  double kld_median, kld_p99, kld_max;
  double top1_agree;         /* fraction of tokens whose argmax equals the base's ("same top p") */
  double ppl_base, ppl, dppl;/* base and this model's perplexity, ppl - ppl_base */
  double rms_dp;             /* RMS of p(target) - p_base(target) */
} qlm_kl_stats;

/* Reader: opens and validates the file (header and size) against what the caller expects (h->n_vocab, protocol,
 * window, stride, n_records, fingerprint; k is read from the file). */
typedef struct qlm_kl_reader qlm_kl_reader;
int qlm_kl_reader_open(qlm_kl_reader **out, const char *path, const qlm_kl_header *expect, qlm_error *err);
/* The same without expect->n_records / fingerprint (a stream does not know them up front): the
 * count and the targets' fingerprint are checked by finish. */
int qlm_kl_reader_open_stream(qlm_kl_reader **out, const char *path, const qlm_kl_header *expect, qlm_error *err);
/* Test hook: when nonzero, KL values kept in memory before the rest spill to a temporary file. */
extern uint64_t qlm_kl_test_mem_values;
/* Compare the next record with this model's row (same arguments as the writer). */
int qlm_kl_reader_add(qlm_kl_reader *r, int32_t target, const float *logits, double lse, qlm_error *err);
/* After all records: the statistics (fails if records are left). */
int qlm_kl_reader_finish(qlm_kl_reader *r, qlm_kl_stats *st, qlm_error *err);
void qlm_kl_reader_free(qlm_kl_reader *r);

#endif
