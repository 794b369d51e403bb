/* model.h — the transformer: weights in canonical layout, and the batched forward pass.
 *
 * Data flow: qlm_source (a reader's tensors) -> qlm_model_load -> qlm_model (weights as
 * qlm_mat: a storage type + rows x cols matrix; f32, and the GGUF block types that have a
 * vec_dot kernel, stay as stored; other types are dequantized to f32 at load, and
 * QLM_DEQUANT_ALL=1 forces f32 for all) -> qlm_forward over a qlm_batch using a qlm_state (KV cache and
 * scratch) -> logits. */
#ifndef QLM_MODEL_H
#define QLM_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"
#include "formats/source.h"
#include "kernels/matmul.h"

/* What happens to a linear matrix's input before the product, for methods that store companion
 * tensors next to the weight (quant/method.h, read by qlm_model_load):
 *   "<weight>.perm"        f32 [cols] of integers (exact below 2^24): the matrix's columns are stored permuted, column j multiplies
 *                          x[perm[j]] (GPTQ act_order with dynamic groups: groups are contiguous in
 *                          the permuted order, so the kernels stay the row-block kernels)
 *   "<weight>.input_scale" f32 [1]: quanto activations=qint8: the input is quantized per tensor with
 *                          this static scale, x -> s * clamp(round(x / s), -128, 127) (after perm) */
typedef struct qlm_lin_in {
  const int32_t *perm;   /* [cols] or NULL */
  float act_scale;       /* > 0: static int8 input scale; 0: inputs stay float */
} qlm_lin_in;

typedef struct qlm_layer {
  const float *attn_norm, *attn_norm_b; /* [n_embd]; _b only gpt2 */
  qlm_mat wq, wk, wv;                   /* [n_head*hd x n_embd], [n_kv*hd x n_embd] x2 */
  const float *bq, *bk, *bv;            /* biases or NULL (qwen2, gpt2) */
  qlm_mat wo;                           /* [n_embd x n_head*hd] */
  const float *bo;                      /* gpt2 */
  const float *ffn_norm, *ffn_norm_b;   /* [n_embd] */
  qlm_mat w_gate, w_up;                 /* [n_ff x n_embd]; w_gate absent (rows 0) for gpt2 */
  const float *b_up;                    /* gpt2 [n_ff] */
  qlm_mat w_down;                       /* [n_embd x n_ff] */
  const float *b_down;                  /* gpt2 [n_embd] */
  qlm_lin_in in_q, in_k, in_v, in_o, in_gate, in_up, in_down; /* input transforms (zero: none) */
} qlm_layer;

typedef struct qlm_model {
  qlm_hparams hp;
  const qlm_source *src;   /* not owned; tensors may point into its storage */
  qlm_mat tok_embd;        /* [n_vocab x n_embd] (rows are looked up) */
  const float *pos_embd;   /* [n_ctx x n_embd], gpt2 only */
  const float *out_norm, *out_norm_b; /* [n_embd] */
  qlm_mat output;          /* [n_vocab x n_embd]; == tok_embd when tied */
  qlm_layer *layers;       /* [n_layer] */
  void *owned;             /* buffers owned by the model (dequantized copies) */
  qlm_outlier_stats int8_stats; /* LLM.int8() outlier columns seen by all its int8 matrices */
} qlm_model;

/* Build the model from a source (dequantizing tensors qlm cannot yet run quantized to f32).
 * Checks that every tensor the architecture needs is present with the right shape. */
int qlm_model_load(const qlm_source *src, qlm_model **out, qlm_error *err);

/* The state a command will create after loading (qlm_state_new's arguments, 0 = its defaults),
 * so the load can refuse up front when weights converted at load + KV cache + scratch exceed the
 * memory available (core/memlimit.h).  qlm_model_load checks the converted weights alone. */
typedef struct qlm_load_plan {
  int n_seq, n_ctx, max_batch, n_threads;
  uint64_t extra_bytes;   /* the command's own buffers (e.g. logits), counted with the scratch */
  const char *ctx_desc;   /* how the context was chosen, for the message, e.g. "at --window 512 x 4 windows" */
  const char *hint;       /* what to suggest, e.g. "use a smaller --window or a quantized file" */
} qlm_load_plan;
/* qlm_model_load with the memory check of the planned state; plan may be NULL.  Fails with
 * QLM_ELIMIT naming the model file and the need, having allocated nothing of the weights. */
int qlm_model_load_planned(const qlm_source *src, const qlm_load_plan *plan, qlm_model **out, qlm_error *err);
/* Bytes qlm_state_new allocates for the KV cache (keys + values), and for its per-row scratch and
 * attention scores, for hyper-parameters as qlm_model_load checked them (m->hp). */
uint64_t qlm_state_kv_bytes(const qlm_hparams *hp, int n_seq, int n_ctx);
uint64_t qlm_state_scratch_bytes(const qlm_hparams *hp, int n_ctx, int max_batch, int n_threads);
/* The one list of the buffers qlm_state_new allocates, in its allocation order: both the sizes
 * above and the allocation read it, so the planned bytes cannot drift from what is allocated
 * (tests/test_state_mem.c counts qlm_state_new's real allocations against it). */
typedef enum qlm_state_buf_id {
  QLM_SB_K_CACHE, QLM_SB_V_CACHE,                  /* float [n_seq][n_layer][n_ctx][kv_dim] each */
  QLM_SB_N_PAST, QLM_SB_BATCH_NEXT,                /* int [n_seq] */
  QLM_SB_SEQ_POS, QLM_SB_SEQ_ID,                   /* int32 [max_batch] */
  QLM_SB_SEQ_WANT,                                 /* int8 [max_batch] */
  QLM_SB_X, QLM_SB_XN, QLM_SB_TMP,                 /* float [B][n_embd] */
  QLM_SB_Q, QLM_SB_ATT,                            /* float [B][n_head*head_dim] */
  QLM_SB_K, QLM_SB_V,                              /* float [B][kv_dim] */
  QLM_SB_HB, QLM_SB_HB2,                           /* float [B][n_ff] */
  QLM_SB_XIN,                                      /* float [B][n_ff + n_embd + n_head*head_dim] */
  QLM_SB_ROPE_COS, QLM_SB_ROPE_SIN,                /* float [B][n_rot/2] */
  QLM_SB_ROPE_POS,                                 /* int32 [B]: the position each rope row holds */
  QLM_SB_SCORES,                                   /* float [n_threads][n_head/n_head_kv][n_ctx] */
  QLM_SB_GATT_SCORES,                              /* float [n_threads][min(QLM_GATT_ROWS, B)][n_ctx],
                                                      none when B = 1 (the BLAS attention's blocks) */
  QLM_SB_COUNT
} qlm_state_buf_id;
typedef struct qlm_state_buf {
  const char *what;  /* label for qlm_calloc's out-of-memory message */
  uint64_t count;    /* elements (saturated at UINT64_MAX); 0 is allocated as 1 */
  uint32_t elem;     /* bytes per element */
  bool kv;           /* part of the KV cache (else scratch) */
} qlm_state_buf;
/* qlm_state_new's defaults for arguments <= 0 (n_ctx: the model's, max_batch: 512, n_threads:
 * online CPUs up to 256), applied in place. */
void qlm_state_defaults(const qlm_hparams *hp, int *n_ctx, int *max_batch, int *n_threads);
/* The table for qlm_state_new's arguments (after qlm_state_defaults); out[i] is buffer id i. */
void qlm_state_buffers(const qlm_hparams *hp, int n_seq, int n_ctx, int max_batch, int n_threads,
                       qlm_state_buf out[QLM_SB_COUNT]);
/* Everything qlm_state_new allocates for these arguments (KV cache + scratch incl. the per-sequence
 * bookkeeping, which qlm_state_scratch_bytes, having no n_seq, counts for one sequence). */
uint64_t qlm_state_bytes(const qlm_hparams *hp, int n_seq, int n_ctx, int max_batch, int n_threads);
/* Bytes of one entry as allocated ((count ? count : 1) * elem, saturated). */
uint64_t qlm_state_buf_bytes(const qlm_state_buf *b);
/* Allocate every buffer of the table (zeroed) into ptr[id]; on failure frees what it allocated,
 * sets ptr[] to NULL and fails with QLM_ENOMEM / QLM_ELIMIT (size overflow) naming the buffer.
 * *bytes (may be NULL) receives the sum allocated.  For qlm_state_new. */
int qlm_state_alloc_buffers(const qlm_state_buf bufs[QLM_SB_COUNT], void *ptr[QLM_SB_COUNT], uint64_t *bytes,
                            qlm_error *err);
/* QLM_ELIMIT naming m's file when the state (qlm_state_new's arguments) does not fit the memory
 * available now (the weights are already loaded); ctx_desc/hint as in qlm_load_plan. */
int qlm_state_check_mem(const qlm_model *m, int n_seq, int n_ctx, int max_batch, int n_threads, const char *ctx_desc,
                        const char *hint, qlm_error *err);
void qlm_model_free(qlm_model *m);

/* KV cache and scratch for up to n_seq sequences of n_ctx positions each. */
typedef struct qlm_state qlm_state;
int qlm_state_new(const qlm_model *m, int n_seq, int n_ctx, int max_batch, int n_threads, qlm_state **out, qlm_error *err);
void qlm_state_free(qlm_state *s);
/* Context positions per sequence the state was created with. */
int qlm_state_n_ctx(const qlm_state *s);
/* Forget everything stored for sequence seq (positions restart at 0). */
void qlm_state_clear(qlm_state *s, int seq);

/* A batch of n rows; row i is token[i] at position pos[i] of sequence seq[i].  Rows of one
 * sequence must have consecutive increasing positions and every earlier position of that
 * sequence must already be in the cache (or earlier in this batch).  logits_out[i] selects
 * whether row i's logits are wanted. */
typedef struct qlm_batch {
  int n;
  const int32_t *token; /* [n] */
  const int32_t *pos;   /* [n] */
  const int32_t *seq;   /* [n] */
  const int8_t *want_logits; /* [n] or NULL = all */
} qlm_batch;

/* Run the forward pass. logits: [n x n_vocab] floats (rows not wanted are left untouched).
 * Fails with QLM_EUSAGE when a position is out of range of the state's n_ctx, or a token id is
 * out of the vocabulary. */
int qlm_forward(const qlm_model *m, qlm_state *s, const qlm_batch *b, float *logits, qlm_error *err);

/* The same pass without the output matrix: hidden [n x n_embd] receives the final-norm output of
 * every row (the features a classification head reads). */
int qlm_forward_hidden(const qlm_model *m, qlm_state *s, const qlm_batch *b, float *hidden, qlm_error *err);

/* Convenience: feed tokens[0..n) of one sequence starting at position pos0; if logits is non-NULL it
 * receives the logits of the last token only ([n_vocab]). Splits into chunks of max_batch rows. */
int qlm_forward_seq(const qlm_model *m, qlm_state *s, int seq, int pos0, const int32_t *tokens, int n,
                    float *logits_last, qlm_error *err);

/* ---- layer by layer (calibration, quant/calib.c) ----
 * The inputs a layer's linear matrices see, by slot: the q/k/v matrices share one input (the
 * normalized residual), gate/up share one, attn_output and ffn_down have their own. */
typedef enum qlm_linear_slot {
  QLM_SLOT_QKV = 0,   /* input of wq, wk, wv:  [T x n_embd] */
  QLM_SLOT_O = 1,     /* input of wo:          [T x n_head*head_dim] */
  QLM_SLOT_UP = 2,    /* input of w_gate/w_up: [T x n_embd] */
  QLM_SLOT_DOWN = 3,  /* input of w_down:      [T x n_ff] */
  QLM_N_SLOTS = 4,
} qlm_linear_slot;
/* Called before the matrices of `slot` of layer `layer` are applied to X [T x cols]. */
typedef void (*qlm_linear_hook)(void *ctx, int layer, qlm_linear_slot slot, const float *X, int T, int cols);

/* The residual stream after the embeddings for batch b: x [b->n x n_embd]. */
int qlm_embed(const qlm_model *m, const qlm_batch *b, float *x, qlm_error *err);
/* Run layer il on x [b->n x n_embd] in place (x enters as the layer's input and leaves as its
 * output), writing the layer's keys/values for b's positions into s as qlm_forward does; hook
 * (may be NULL) sees every linear input.  Positions must follow what s holds for each sequence
 * (use qlm_state_clear before a new sample); the state's positions are not advanced, so the same
 * batch can be run through the next layer, or again through this one. */
int qlm_forward_layer(const qlm_model *m, qlm_state *s, const qlm_batch *b, int il, float *x, qlm_linear_hook hook,
                      void *ctx, qlm_error *err);

/* The same pass for statistics only: hook sees the layer's linear inputs (and the layer's
 * keys/values are written to s), but x is only read and the last linear (the down/output
 * projection of the feed-forward, whose input the hook has already seen) is not computed. */
int qlm_forward_layer_inputs(const qlm_model *m, qlm_state *s, const qlm_batch *b, int il, const float *x,
                             qlm_linear_hook hook, void *ctx, qlm_error *err);

/* ---- one layer in stages (the calibration's true-sequential pass, quant/calib.c) ----
 * qlm_forward_layer cut at each linear input, so that a caller can gather one slot's statistics
 * over all its samples, replace that slot's matrices, and run the next stage with them.  For one
 * sample (batch b, residual x [b->n x n_embd], owned by the caller) the stages in this order
 *   qlm_stage_qkv_input      X = attn_norm(x)                              [T x n_embd]
 *   qlm_stage_attention      X = attention(q, k, v of attn_norm(x))         [T x n_head*head_dim]
 *                            (writes the layer's keys/values to s as qlm_forward_layer does;
 *                            positions must follow what s holds: qlm_state_clear first)
 *   qlm_stage_attn_residual  x += wo · att + bo                             (att: that X)
 *   qlm_stage_ffn_input      X = ffn_norm(x)                               [T x n_embd]
 *   qlm_stage_ffn_act        X = silu(w_gate · n) * (w_up · n), n = ffn_norm(x)  [T x n_ff]
 *                            (gpt2: gelu(w_up · n + b_up))
 *   qlm_stage_ffn_residual   x += w_down · h + b_down                      (h: that X)
 * compute bit for bit what qlm_forward_layer computes (with the matrices the model holds at each
 * call).  *X points into s and stays valid until the next call on s; att and h may be those
 * pointers or the caller's copies.  qlm_stage_attention and qlm_stage_ffn_act write X into out
 * instead when out is not NULL (the caller's [T x n_head*head_dim] or [T x n_ff], *X = out): a
 * caller that keeps X for a later stage is spared a copy. */
int qlm_stage_qkv_input(const qlm_model *m, qlm_state *s, const qlm_batch *b, int il, const float *x,
                        const float **X, qlm_error *err);
int qlm_stage_attention(const qlm_model *m, qlm_state *s, const qlm_batch *b, int il, const float *x, float *out,
                        const float **X, qlm_error *err);
int qlm_stage_attn_residual(const qlm_model *m, qlm_state *s, const qlm_batch *b, int il, const float *att, float *x,
                            qlm_error *err);
int qlm_stage_ffn_input(const qlm_model *m, qlm_state *s, const qlm_batch *b, int il, const float *x,
                        const float **X, qlm_error *err);
int qlm_stage_ffn_act(const qlm_model *m, qlm_state *s, const qlm_batch *b, int il, const float *x, float *out,
                      const float **X, qlm_error *err);
int qlm_stage_ffn_residual(const qlm_model *m, qlm_state *s, const qlm_batch *b, int il, const float *h, float *x,
                           qlm_error *err);

/* Attention of batches of two or more rows that are all of one sequence (a prompt, a
 * perplexity window, a calibration sample) by BLAS matrix products over blocks of QLM_GATT_ROWS
 * query rows, f32 (see forward.c), instead of row by row with the fixed-order kernels of
 * kernels/attn.h (scores summed in double).  On by default: at a 512-token prompt it is most of
 * the difference in prefill speed; the two agree to ~1e-6 relative (tests/test_calib.c).  Off:
 * every batch takes the row kernels, whose results do not depend on how rows are batched (one
 * token at a time gives the same logits as a whole prompt) nor on the SIMD level. */
#define QLM_GATT_ROWS 64
int qlm_state_set_gemm_attention(qlm_state *s, bool on, qlm_error *err);

/* The state's worker threads (n_threads of qlm_state_new, the caller's thread counted), for a
 * caller that runs work of its own between forwards on the same threads (the calibration's
 * statistics); owned by s. */
struct qlm_pool *qlm_state_pool(qlm_state *s);

/* Multi-row products (T > 1) of the linear layers in bf16 with f32 sums (qlm_matmul_bf16), and
 * the BLAS attention's scores and weights·values products in bf16 (kernels/bgemm.h qlm_bgemm_op;
 * the softmax stays f32): the calibration forward's --calib-dtype bf16, about twice the f32 rate
 * on AVX-512 BF16.  Off by default; matrices qlm_matmul_bf16 does not take, and decode, stay f32;
 * norms and the residual stream stay f32 either way.  On allocates the packed keys and values
 * and the bf16 queries and weights of the attention (QLM_ENOMEM, with bf16 left off, when that fails). */
int qlm_state_set_bf16(qlm_state *s, bool on, qlm_error *err);
/* The model's weights changed (a matrix replaced or edited): forget the bf16 copies the state
 * keeps of them (kernels/matmul.h, qlm_bf16_cache).  Needed only with qlm_state_set_bf16 on. */
void qlm_state_weights_changed(qlm_state *s);

#endif
