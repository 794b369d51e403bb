/* source.h — what every model-file reader hands to the rest of qlm.
 *
 * A reader (GGUF, Hugging Face folder, llama2.c checkpoint) opens a model and produces a
 * qlm_source: the hyper-parameters, the tensors under *canonical names* (llama.cpp's GGUF
 * names, listed below), generic metadata for `qlm info`, and the tokenizer description.
 * Tensor data stays where the reader put it (an mmap of the file, or buffers the reader
 * owns); it lives until qlm_source_close.
 *
 * Canonical tensor names and shapes (ne[0] is the contiguous dimension, as in GGUF; a weight
 * matrix of a linear layer y = W x has ne[0] = in_features, ne[1] = out_features):
 *   token_embd.weight        [n_embd, n_vocab]
 *   position_embd.weight     [n_embd, n_ctx]                 (gpt2)
 *   output_norm.weight/.bias [n_embd]                        (bias: gpt2)
 *   output.weight            [n_embd, n_vocab]               (absent when tied to token_embd)
 *   blk.N.attn_norm.weight/.bias     [n_embd]
 *   blk.N.attn_q.weight      [n_embd, n_head*head_dim]       (+ .bias for qwen2)
 *   blk.N.attn_k.weight      [n_embd, n_head_kv*head_dim]    (+ .bias)
 *   blk.N.attn_v.weight      [n_embd, n_head_kv*head_dim]    (+ .bias)
 *   blk.N.attn_qkv.weight/.bias [n_embd, 3*n_embd]           (gpt2 fused q|k|v, rows in that order)
 *   blk.N.attn_output.weight [n_head*head_dim, n_embd]       (+ .bias gpt2)
 *   blk.N.ffn_norm.weight/.bias      [n_embd]
 *   blk.N.ffn_gate.weight    [n_embd, n_ff]                  (llama/qwen2)
 *   blk.N.ffn_up.weight      [n_embd, n_ff]                  (+ .bias gpt2)
 *   blk.N.ffn_down.weight    [n_ff, n_embd]                  (+ .bias gpt2)
 * GPT-2 in HF stores Conv1D weights transposed ([out, in] contiguous): the HF reader
 * transposes them so every reader yields the layout above. */
#ifndef QLM_SOURCE_H
#define QLM_SOURCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "kernels/types.h"
#include "tokenizer/vocab.h"

typedef enum qlm_arch {
  QLM_ARCH_LLAMA = 0, /* LLaMA, Mistral, SmolLM, TinyLlama */
  QLM_ARCH_QWEN2 = 1, /* LLaMA + qkv bias */
  QLM_ARCH_GPT2 = 2,  /* LayerNorm, learned positions, GELU, fused qkv */
} qlm_arch;

typedef enum qlm_rope_style {
  QLM_ROPE_NONE = 0,        /* gpt2: learned positions */
  QLM_ROPE_INTERLEAVED = 1, /* rotate pairs (x[2i], x[2i+1]): GGUF llama, llama2.c */
  QLM_ROPE_NEOX = 2,        /* rotate halves (x[i], x[i+d/2]): HF checkpoints, GGUF qwen2 */
} qlm_rope_style;

typedef struct qlm_hparams {
  qlm_arch arch;
  int n_vocab;     /* rows of token_embd */
  int n_ctx;       /* trained context length (max positions) */
  int n_embd;      /* model width */
  int n_ff;        /* FFN hidden width */
  int n_layer;
  int n_head;
  int n_head_kv;   /* == n_head without GQA */
  int head_dim;    /* n_embd / n_head unless the file says otherwise */
  int n_rot;       /* rotary dims per head (== head_dim for all supported archs) */
  float norm_eps;  /* RMSNorm / LayerNorm epsilon */
  float rope_theta;/* RoPE base frequency */
  qlm_rope_style rope_style;
  bool tied_embeddings; /* no output.weight: logits use token_embd */
} qlm_hparams;

/* One tensor as stored in the source. */
typedef struct qlm_tensor {
  char *name;          /* canonical name (see above) */
  int type;            /* qlm_type */
  int n_dims;          /* 1..4 */
  int64_t ne[4];       /* elements per dimension, ne[0] contiguous; unused dims are 1 */
  const void *data;    /* nbytes of data in the reader's storage */
  size_t nbytes;       /* == qlm_type_row_bytes(type, ne[0]) * ne[1]*ne[2]*ne[3] */
} qlm_tensor;

/* Generic metadata (GGUF key/values; other readers translate theirs), for display. */
typedef enum qlm_meta_type {
  QLM_META_U8, QLM_META_I8, QLM_META_U16, QLM_META_I16, QLM_META_U32, QLM_META_I32,
  QLM_META_F32, QLM_META_BOOL, QLM_META_STRING, QLM_META_ARRAY, QLM_META_U64, QLM_META_I64, QLM_META_F64,
} qlm_meta_type; /* numeric values equal GGUF's value-type ids */

/* Bytes of one scalar value of a metadata type (GGUF's sizes); 0 for string and array. */
size_t qlm_meta_scalar_size(int type);

typedef struct qlm_meta {
  char *key;
  qlm_meta_type type;
  qlm_meta_type arr_type; /* element type when type == QLM_META_ARRAY */
  uint64_t arr_len;       /* element count when type == QLM_META_ARRAY */
  union {
    uint64_t u;   /* unsigned ints and bool */
    int64_t i;    /* signed ints */
    double f;     /* floats */
    char *s;      /* string (NUL-terminated; GGUF strings may not contain NUL: rejected) */
  } v;
  const void *arr; /* array elements in file byte order (numeric), or char** for strings */
} qlm_meta;

typedef struct qlm_source {
  char *path;              /* what the user gave */
  const char *format;      /* "gguf", "hf", "llama2c" */
  qlm_hparams hp;
  int n_tensors;
  qlm_tensor *tensors;
  int n_meta;
  qlm_meta *meta;
  qlm_vocab vocab;         /* tokenizer description; vocab.n_tokens == 0 if none was found */
  void *priv;              /* reader-private state (mappings, owned buffers) */
  /* The read-only file mapping [mapped, mapped + mapped_size) that tensor data may point into
   * (GGUF), or NULL: pages there can be dropped from the process and are read again from the file
   * if touched (the loader does so after making an interleaved copy, model/model.c). */
  const void *mapped;
  size_t mapped_size;
  void (*free_priv)(void *priv);
} qlm_source;

/* Open a model, detecting the format: a directory with config.json -> HF; a file starting
 * with "GGUF" -> GGUF; otherwise a llama2.c checkpoint. `tokenizer_path` (may be NULL)
 * overrides where the tokenizer comes from (tokenizer.bin for llama2.c; tokenizer.json for
 * HF; by default llama2.c looks for tokenizer.bin / tok*.bin beside the checkpoint). */
int qlm_source_open(const char *path, const char *tokenizer_path, qlm_source **out, qlm_error *err);
/* (qlm_source_open applies `tokenizer_path` to every format: an HF folder reads it in place of its
 * tokenizer.json, checked against config.json's vocab_size; a llama2.c checkpoint reads it in
 * place of the tokenizer.bin beside it, which must hold the header's vocab_size tokens; a GGUF
 * model is opened with its own vocabulary, replaced by qlm_source_set_tokenizer.) */
/* Replace src's vocabulary by the tokenizer in `path` (tokenizer.json, else a llama2.c
 * tokenizer.bin).  QLM_EUSAGE naming both sizes when it cannot be the model's: the model has a
 * vocabulary of another size, or an embedding with fewer rows (llama2.c: not exactly as many). */
int qlm_source_set_tokenizer(qlm_source *src, const char *path, qlm_error *err);
void qlm_source_close(qlm_source *src);

/* Lookups (NULL if absent). */
const qlm_tensor *qlm_source_tensor(const qlm_source *src, const char *name);
const qlm_meta *qlm_source_meta(const qlm_source *src, const char *key);

/* Per-format readers (used by qlm_source_open; callable directly). */
int qlm_gguf_open(const char *path, qlm_source **out, qlm_error *err);
int qlm_hf_open(const char *dir, const char *tokenizer_json, qlm_source **out, qlm_error *err);
int qlm_llama2c_open(const char *path, const char *tokenizer_bin, qlm_source **out, qlm_error *err);

/* Helpers shared by readers: allocate an empty source, append tensors/metadata (copies name). */
qlm_source *qlm_source_new(const char *path, const char *format, qlm_error *err);
qlm_tensor *qlm_source_add_tensor(qlm_source *src, const char *name, int type, int n_dims, const int64_t *ne,
                                  const void *data, size_t nbytes, qlm_error *err);
qlm_meta *qlm_source_add_meta(qlm_source *src, const char *key, qlm_error *err);

/* Parameter count and total tensor bytes (for info and bits-per-weight). */
int64_t qlm_source_n_params(const qlm_source *src);

#endif
