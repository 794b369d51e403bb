/* testutil.h — helpers shared by the cmocka tests. */
#ifndef QLM_TESTUTIL_H
#define QLM_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

/* Path of a file under the shared folder (env QLM_SHARED, set by ctest; default ../shared).
 * Returns a malloc'd string. */
char *tu_shared(const char *rel);
/* Path under tests/data (env QLM_TESTDATA). malloc'd. */
char *tu_testdata(const char *rel);
/* A fresh temporary directory (removed by the OS's tmp cleaning; tests remove their files). malloc'd. */
char *tu_tmpdir(void);
/* Read a generated vector file under tests/data (at most 1 MiB) whose first 8 bytes are `magic`;
 * fails the test naming `generator` (the tools/ script that makes it) if it is missing or wrong.
 * Returns a malloc'd buffer and its size. */
uint8_t *tu_read_vectors(const char *rel, const char *magic8, const char *generator, size_t *n);
/* A cursor over such a vector file: tu_take returns the next n bytes (failing the test when fewer
 * are left), tu_take_u32 the next little-endian uint32. */
typedef struct tu_rd {
  const uint8_t *p, *end;
} tu_rd;
const void *tu_take(tu_rd *r, size_t n);
uint32_t tu_take_u32(tu_rd *r);
/* Write bytes to a file; fails the test on error. */
void tu_write_file(const char *path, const void *data, size_t n);
/* A growing byte buffer for hand-built files (little-endian fields, as GGUF and safetensors use),
 * with marks: offsets where a section or field ends (tu_mark), for truncation tests. */
typedef struct tu_bytes {
  uint8_t *p;
  size_t n, cap;
  size_t mark[128];
  int n_mark;
} tu_bytes;
void tu_put(tu_bytes *b, const void *d, size_t n);
void tu_put_u8(tu_bytes *b, uint8_t v);
void tu_put_u32(tu_bytes *b, uint32_t v);
void tu_put_u64(tu_bytes *b, uint64_t v);
void tu_put_strn(tu_bytes *b, const char *s, size_t n); /* u64 length, then the bytes */
void tu_put_str(tu_bytes *b, const char *s);
void tu_pad_to(tu_bytes *b, size_t align);              /* zero bytes up to a multiple of align */
void tu_mark(tu_bytes *b);
/* stories260K.gguf with llama.context_length patched from 2048 to 2^24 (the largest qlm accepts),
 * written to DIR/bigctx.gguf so a command may ask for a huge context; returns the path (malloc'd). */
char *tu_write_stories_bigctx(const char *dir);
/* Deterministic pseudo-random numbers (xorshift64*), for reproducible synthetic data. */
uint64_t tu_rand_u64(uint64_t *state);
float tu_rand_uniform(uint64_t *state);  /* [0,1) */
float tu_rand_normal(uint64_t *state);   /* N(0,1), Box-Muller */



/* Run `qlm ARGS` (ARGS is shell syntax) with stdin from /dev/null, capturing stdout and stderr;
 * with a prefix (may be ""), as `bash -c "PREFIX exec qlm ARGS"` (the prefix may set limits, e.g.
 * "ulimit -f 100;").  The binary is $QLM_BIN
 * (set by ctest).  status: the exit code, or 128 + the signal that killed it. */
typedef struct tu_run {
  int status;
  char *out, *err;  /* malloc'd, NUL-terminated */
} tu_run;
tu_run tu_run_qlm(const char *prefix, const char *args);
void tu_run_free(tu_run *r);

/* Where scripts/get-models put SmolLM2-135M-Instruct.Q4_1.gguf: $QLM_SMOLLM2_GGUF, else
 * $QLM_CACHE/models/..., else ~/.cache/qlm/models/... (malloc'd). */
char *tu_smollm2_path(void);

#include "formats/source.h"
/* The stories260K hyper-parameters of ../shared/models/README.md, as every reader must give them;
 * n_ctx, rope style and tying differ between the three copies and are passed in. */
void tu_check_stories260k_hparams(const qlm_hparams *hp, int n_ctx, int rope_style, int tied);

/* Greedy argmax tokens of the model in src, starting from token 1 (BOS of the Llama vocabularies),
 * one token per forward step; out[n].  With `forced`, step i is fed forced[i-1] instead of its
 * own previous pick (teacher forcing).  all_logits [n x n_vocab] receives every step's logits
 * (may be NULL).  Fails the test on non-finite logits. */
void tu_greedy(const qlm_source *src, int n, const int32_t *forced, int32_t *out, float *all_logits);
/* Mean |logit - lref| over n teacher-forced steps of q on ref (n <= 64; lref: [n x q's n_vocab],
 * e.g. tu_greedy's logits of the f32 model on its own greedy text ref): how far a quantized model
 * drifts from f32. */
double tu_logit_drift(const qlm_source *q, const int32_t *ref, const float *lref, int n);
/* Length of the common prefix of two token arrays of length n. */
int tu_common_prefix(const int32_t *a, const int32_t *b, int n);

/* The closed-form "bigram" model: stories260K with every attn_output and ffn_down weight zeroed,
 * so a token's final hidden state, and the next token's distribution, depend on that token alone
 * and follow in closed form from the embedding, final norm and output weights:
 *   hid[a] = rmsnorm(emb[a]) * output_norm,   lp[a][b] = log softmax(output . hid[a])[b]
 * computed here in double from the file's f32 weights (not through the engine). */
struct qlm_model;
struct qlm_tokenizer;
typedef struct tu_bigram {
  char *dir, path[600];         /* the GGUF written in a temporary folder */
  qlm_source *src;
  struct qlm_model *model;
  struct qlm_tokenizer *tok;
  int V, E;
  double *hid;                  /* [V x E] */
  double *lp;                   /* [V x V] log p(b | a) */
} tu_bigram;
/* Smoothing check (SmoothQuant, AWQ): quantize `model` into dir with base's method, options and
 * calibration, but with the method's quantize() replaced by an exact f32 copy — so only the
 * driver's folding of the factors into the producers changes the file.  Models without a
 * tokenizer are calibrated on seeded random ids.  Returns max |dlogit| / max |logit| over 24
 * teacher-forced steps against the original; *norm_changed: blk.0.attn_norm differs (s != 1). */
struct qlm_quant_params;
double tu_smooth_only_drift(const char *model, const char *dir, const struct qlm_quant_params *base,
                            int *norm_changed);

/* Write the bigram GGUF to path. */
void tu_write_bigram_gguf(const char *path);
tu_bigram *tu_bigram_new(void);
void tu_bigram_free(tu_bigram *b);
#endif
