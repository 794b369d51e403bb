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

/* Convenience: feed tokens[0..n) of one sequence starting at position pos0; if logits is non-NULL it
 * receives the logits of the last token only ([n_vocab]). Splits into chunks of max_batch rows. */
int qlm_forward_seq(const qlm_model *m, qlm_state *s, int seq, int pos0, const int32_t *tokens, int n,
                    float *logits_last, qlm_error *err);

#endif
