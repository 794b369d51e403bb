/* quantize.h — `qlm quantize`: quantize a model's weights with any method (quant/method.h),
 * chosen per tensor by selective-precision rules (quant/rules.h), and write a self-contained
 * GGUF file: the qlm model file.  Tensors in llama.cpp's block types use ggml's type ids, so a
 * file quantized only with those (method gguf / --type) loads in llama.cpp; other methods store
 * qlm's own type ids (kernels/types.h) that only qlm reads.
 *
 * Which tensors get what: the first matching rule decides; otherwise the 2-D weight matrices of
 * the linear layers (blk.N.attn_q/k/v/output, attn_qkv, ffn_gate/up/down .weight) get the
 * default method (`method` + `opts`, or the llama.cpp `type`), token_embd.weight and
 * output.weight get `embd_type` (default f32).  Everything else (norms, biases, position
 * embeddings) is written as f32.  Input tensors of any type are first dequantized, so an
 * already-quantized GGUF can be re-quantized.
 *
 * Metadata: qlm.version, qlm.source, qlm.quantize.seconds, qlm.quantize.method (the default),
 * qlm.quantize.rules (the rule lines, if any) and, per tensor quantized by a method,
 * qlm.tensor.<name>.method = the method and options ("absmax bits=4 group=64").
 *
 * Fallback: a matrix whose row length is not a multiple of the target's block size (32 for the
 * legacy types, 256 for the k-quants) gets another type, chosen as llama-quantize does: q4_K ->
 * q5_0, q5_K -> q5_1, q6_K -> q8_0, and f16 when 32 does not divide the rows either (e.g.
 * stories260K's ffn_down with 172 columns).  Legacy types fall back to f16 directly (where
 * llama-quantize refuses the model).  Fallbacks are reported per tensor and counted. 
 *
 * RoPE layout: GGUF "llama" files use the interleaved layout; a Hugging Face LLaMA checkpoint
 * stores q/k in the rotate-half layout, so its attn_q/attn_k rows are permuted back per head
 * (HF row i < hd/2 -> row 2i, HF row hd/2 + i -> row 2i+1).  qwen2 GGUF files keep rotate-half. */
#ifndef QLM_QUANTIZE_H
#define QLM_QUANTIZE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"
#include "formats/source.h"

#include "quant/calib.h"
#include "quant/rules.h"

/* What happened to one tensor (passed to the progress callback). */
typedef struct qlm_quant_tensor {
  int index, n_tensors;  /* 1-based position, total */
  const char *name;
  int n_dims;
  int64_t ne[4];
  int src_type, type;    /* storage type in the input / in the output */
  int wanted_type;       /* the type the rules asked for (!= type when fallen back) */
  bool quantized;        /* got a type other than f32 chosen by the rules */
  bool fallback;         /* wanted_type could not hold the shape: written as `type` */
  double rel_err;        /* ||W - deq(Q(W))||_F / ||W||_F (0 for exact types) */
  double max_err;        /* max |W - deq(Q(W))| */
  size_t bytes_in, bytes_out;
  const char *method;    /* method and options ("nf4 block=64 dq=1"), "f32" or "f16" */
  double bpw;            /* bits per weight stored for this tensor (incl. companions) */
  char fallback_why[160];/* why the wanted choice could not hold the shape */
  int64_t params_done;   /* weights converted so far, this tensor included */
  int64_t n_params;      /* weights in the model */
  double elapsed;        /* seconds since the quantization phase started */
} qlm_quant_tensor;

typedef struct qlm_quant_summary {
  int n_tensors, n_quantized, n_kept, n_fallback;
  int64_t n_params;
  uint64_t bytes_in;     /* tensor data of the input */
  uint64_t bytes_out;    /* tensor data written */
  uint64_t file_bytes;   /* size of the output file */
  double seconds;        /* wall time of the quantization phase (not the writing) */
  double method_seconds; /* of which inside the methods' quantize calls (for llama.cpp types: the
                          * row conversion) on weights already read into memory as f32: the figure
                          * comparable with a library's quantize calls.  Not in it: reading and
                          * converting the input weights, calibration, the error report, and the
                          * tensors kept in f32/f16 (embeddings, norms). */
  /* The calibration the file was made with (written as qlm.calib.*; all zero when no pass ran) */
  bool calibrated;       /* a calibration pass ran (a calibrated method or --target-bpw) */
  int calib_samples;     /* windows taken */
  int calib_len;         /* tokens per window, after the caps (context, text) */
  uint64_t calib_seed;   /* qlm_calib_opts.seed */
  bool calib_bf16;       /* the forward's products in bf16 (--calib-dtype bf16) */
} qlm_quant_summary;

typedef struct qlm_quant_params {
  /* Default for the linear layers: `method` with `opts` (defaults filled in by the method), or
   * when method is NULL the llama.cpp type `type` (f32/f16 store unquantized). */
  const qlm_quant_method *method;
  qlm_quant_opts opts;
  int type;              /* used when method is NULL */
  int embd_type;         /* token_embd/output: QLM_TYPE_F32, QLM_TYPE_F16, or -1 = as the linear layers */
  const qlm_rules *rules;/* selective precision, may be NULL */
  /* Calibrated methods (method->needs_calib): the text and the windows taken from it. */
  const char *calib_text;
  qlm_calib_opts calib;
  const int32_t *calib_ids; /* instead of calib_text: already tokenized text (no BOS added) */
  int n_calib_ids;
  /* > 0: choose each linear matrix's bits (2,3,4,5,6,8 as its method allows) for this average
   * bits per weight over those matrices, from their output-error curves on the calibration
   * data (quant/bitalloc.h).  on_alloc reports the matrices allocated and the bpw reached. */
  double target_bpw;
  void (*on_alloc)(void *ctx, int n_matrices, double bpw);
  void (*on_calib)(void *ctx, int n_samples, int seq_len, const char *text); /* may be NULL */
  int n_threads;         /* 1.. */
  const char *source_label; /* written as qlm.source (NULL: src->path) */
  void (*on_tensor)(void *ctx, const qlm_quant_tensor *t); /* progress, may be NULL */
  void *ctx;
} qlm_quant_params;

/* llama.cpp's name of a target type ("q4_K") -> qlm_type, or -1.  Accepts the types listed in
 * qlm_quantize_types (case-insensitive). */
int qlm_quantize_parse_type(const char *name);
extern const char *const qlm_quantize_types; /* "q8_0|q4_0|...|f32" for help texts */

/* Quantize src into the GGUF file out_path (written atomically). */
int qlm_quantize(const qlm_source *src, const char *out_path, const qlm_quant_params *p, qlm_quant_summary *sum,
                 qlm_error *err);

/* What a tensor gets (before any fallback for its shape). */
qlm_choice qlm_quantize_choice(const qlm_tensor *t, const qlm_quant_params *p);

#endif
