/* calib.h — calibration: statistics of every linear layer's inputs on sample text, gathered
 * layer by layer ("sequential" mode, as GPTQ does: each layer sees the outputs of the layers
 * before it after those were quantized).
 *
 * Pipeline: text -> tokens (qlm_calib_load_text, qlm_calib_sample: n_samples windows of seq_len
 * tokens at seeded random offsets, each starting with BOS when the vocabulary adds one) ->
 * qlm_calib_run: the residual streams of all samples are kept ([n_samples x seq_len x n_embd]
 * floats); for each layer il, every sample is run through layer il alone while its linear inputs
 * are accumulated into that layer's statistics (one layer's at a time: memory stays bounded),
 * the caller quantizes the layer (and may swap the model's matrices for the quantized ones), and
 * the samples are run through layer il again to become layer il+1's inputs.
 *
 * qlm_calib_run_staged is the "true sequential" pass (GPTQ's --true-sequential, AutoGPTQ's
 * default true_sequential=True) in exactly one forward per layer: the layer runs in stages
 * (model.h, qlm_stage_*), and after each slot's statistics are complete over all samples the
 * caller quantizes that slot's matrices, which the later stages of the same layer then use:
 *   qkv:  attn_norm(x) (no product)                      -> statistics of slot qkv -> on_slot
 *   o:    q, k, v (quantized), attention                 -> statistics of slot o   -> on_slot
 *   up:   x += wo·att (quantized), ffn_norm              -> statistics of slot up  -> on_slot
 *   down: gate, up (quantized), SwiGLU                   -> statistics of slot down -> on_slot
 *   then  x += w_down·h (quantized): layer il+1's input.
 * The attention outputs [n_samples x seq_len x n_head*head_dim] and the feed-forward activations
 * [n_samples x seq_len x n_ff] are kept between their stages when memory allows (core/memlimit.h;
 * qlm_calib_opts.store), else recomputed from x in the next stage (attention: q/k/v products and
 * attention again; activations: gate/up again) — the same values either way.
 *
 * The default text is C4 (../shared/data/calibration/llama-factory/c4_demo.jsonl, 300 English web
 * documents, GPTQ's usual calibration source), never the WikiText-2 test split used for
 * perplexity. */
#ifndef QLM_CALIB_H
#define QLM_CALIB_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"
#include "kernels/bgemm.h"
#include "kernels/threadpool.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

#define QLM_CALIB_DEFAULT_TEXT "data/calibration/llama-factory/c4_demo.jsonl" /* under the shared folder */

typedef struct qlm_calib_opts {
  int n_samples;          /* windows (default 128) */
  int seq_len;            /* tokens per window (default 2048; capped by the model's context and the text) */
  uint64_t seed;          /* window offsets */
  bool want_hessian;      /* accumulate X^T X (cols^2 doubles per slot) */
  bool hessian_only;      /* skip the per-column statistics (absmax, sums of x^2 and |x|, per-call
                             maxima: left zero) for a method that reads only the Hessian (GPTQ) */
  int store;              /* qlm_calib_run_staged: QLM_CALIB_STORE_* (0 = auto) */
  bool bf16;              /* the forward's linear products and the Hessians in bf16 with f32 sums
                             (kernels/bgemm.h; --calib-dtype bf16, the CLI's default from AVX-512 up):
                             about 2x faster on AVX-512 BF16, 1.1-1.2x as AVX-512F FMA chains, 0.8-0.9x
                             as AVX2 FMA chains, as
                             the reference GPTQ/AWQ run their calibration forward in fp16 */
  float *x_out;           /* not NULL: receives the residual streams after the last layer
                             [n_samples x seq_len x n_embd] (seq_len as passed to the run) */
} qlm_calib_opts;

/* What qlm_calib_run_staged keeps between stages instead of recomputing it. */
enum {
  QLM_CALIB_STORE_AUTO = 0, /* as much as fits half of the memory available (attention outputs first) */
  QLM_CALIB_STORE_NONE = 1, /* recompute both */
  QLM_CALIB_STORE_ATT = 2,  /* keep the attention outputs, recompute the activations */
  QLM_CALIB_STORE_ALL = 3,  /* keep both */
};

/* Statistics of one layer's linear inputs, per slot (model.h: qkv, o, up, down). */
typedef struct qlm_layer_stats {
  int cols[QLM_N_SLOTS];
  int64_t n_tokens;               /* rows seen (the same for every slot) */
  double *hessian[QLM_N_SLOTS];   /* [cols x cols] sum over tokens of x x^T (NULL unless want_hessian) */
  float *absmax[QLM_N_SLOTS];     /* [cols] max |x_j| */
  double *sqsum[QLM_N_SLOTS];     /* [cols] sum of x_j^2 */
  double *abssum[QLM_N_SLOTS];    /* [cols] sum of |x_j| */
  int n_calls;                    /* forward calls seen (one per calibration window, in order) */
  float *call_absmax[QLM_N_SLOTS];/* [n_samples] max |x| over each call's input (quanto's per-batch absmax) */
} qlm_layer_stats;

/* Called once per layer after its statistics are complete; may replace m->layers[il]'s matrices
 * (the next pass through layer il uses them). */
typedef int (*qlm_calib_layer_fn)(void *ctx, int il, const qlm_layer_stats *st, qlm_error *err);

/* Called by qlm_calib_run_staged once per slot of layer il, in slot order, when that slot's
 * statistics are complete (mirrored Hessian); st's earlier slots hold this layer's complete
 * statistics too, its later slots are still zero.  May replace the matrices of m->layers[il] that
 * read `slot` (the layer's later stages use them). */
typedef int (*qlm_calib_slot_fn)(void *ctx, int il, qlm_linear_slot slot, const qlm_layer_stats *st, qlm_error *err);

/* Read calibration text: a .jsonl file (one {"text": ...} object per line; texts joined by blank
 * lines) or plain text.  *text is malloc'd and NUL-terminated. */
int qlm_calib_load_text(const char *path, char **text, size_t *len, qlm_error *err);

/* Tokenize text and cut n_samples windows of seq_len tokens at seeded random offsets (the last
 * window may start anywhere a whole window fits; with a text shorter than one window, seq_len
 * shrinks to the text).  *tokens is malloc'd [n_samples x *seq_len]. */
int qlm_calib_sample(const qlm_tokenizer *tok, const char *text, size_t len, const qlm_calib_opts *o,
                     int32_t **tokens, int *seq_len, qlm_error *err);

/* The same from an already tokenized text (bos < 0: no BOS in front). */
int qlm_calib_sample_ids(const int32_t *ids, int n_ids, int bos, const qlm_calib_opts *o, int32_t **tokens,
                         int *seq_len, qlm_error *err);

/* The sequential pass over all layers (see the top). n_threads for the forward passes. */
int qlm_calib_run(qlm_model *m, const int32_t *tokens, int n_samples, int seq_len, const qlm_calib_opts *o,
                  int n_threads, qlm_calib_layer_fn on_layer, void *ctx, qlm_error *err);

/* The true-sequential pass (see the top): one forward per layer, on_slot after each slot. */
int qlm_calib_run_staged(qlm_model *m, const int32_t *tokens, int n_samples, int seq_len, const qlm_calib_opts *o,
                         int n_threads, qlm_calib_slot_fn on_slot, void *ctx, qlm_error *err);

/* The Hessian step of the statistics pass: the upper triangle (j >= i) of H [cols x cols] +=
 * X^T X for X [T x cols], computed in f32 by BLAS (tmp: cols^2 floats of scratch) and added in
 * double; the lower triangle is not touched.  The result does not depend on pool's size (pool
 * may be NULL).  Error bound and why it suffices: calib.c, accumulate(). */
void qlm_calib_hessian_add(double *H, float *tmp, const float *X, int T, int cols, qlm_pool *pool);

/* The same in bf16 (--calib-dtype bf16): X rounded to bf16 and packed into xp
 * (qlm_bgemm_packed_len(T, cols) values of scratch), the products by kernels/bgemm.h's
 * qlm_bgemm_op_upper (one f32 chain per entry), added in double.  Needs qlm_bgemm_fast() for
 * speed (else the scalar reference: same bits). */
void qlm_calib_hessian_add_bf16(double *H, float *tmp, qlm_bf16 *xp, const float *X, int T, int cols, qlm_pool *pool);

#endif
