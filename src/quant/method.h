/* method.h — the one interface every quantization method implements.
 *
 * A method takes one weight matrix W [rows x cols] (row-major floats, rows = output features),
 * optional calibration statistics and its options, and returns a quantized tensor: the main
 * tensor in one storage type (kernels/types.h) whose rows the kernels multiply directly, plus
 * optional companion tensors for methods that keep tensor-level data outside the row blocks
 * (NF4/FP4 double quantization stores its 8-bit absmax codes that way).
 *
 * One method per source file in src/quant/ (rtn.c, llm_int8.c, bnb4.c, ggml_block.c, and the
 * calibrated methods of later issues); quant/method.c lists them.
 *
 * Options are parsed from "key=value" words so that the command line, rules files and the
 * metadata written into a model file all use one spelling, e.g. "bits=4 group=64 asym=1". */
#ifndef QLM_METHOD_H
#define QLM_METHOD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

/* Granularity of RTN-style scales: per group of `group` weights along a row, per output row
 * (per-channel), or one for the whole tensor. */
enum { QLM_GROUP_TENSOR = -1, QLM_GROUP_CHANNEL = 0 };

/* Float types a method may emulate (quanto computes its scales in the model's dtype). */
enum { QLM_DTYPE_DEFAULT = 0, QLM_DTYPE_F16 = 1, QLM_DTYPE_BF16 = 2, QLM_DTYPE_F32 = 3 };

typedef struct qlm_quant_opts {
  int bits;              /* 2..8 for RTN; 4 for nf4/fp4; 8 for llm-int8; 0 = method default */
  int group;             /* > 0: group size; QLM_GROUP_CHANNEL; QLM_GROUP_TENSOR */
  bool asym;             /* RTN: zero-point (asymmetric) instead of absmax (symmetric) */
  bool double_quant;     /* nf4/fp4: quantize the absmax constants (8-bit, block 256) */
  float threshold;       /* llm-int8: outlier threshold on |activation| (default 6.0) */
  bool threshold_set;    /* threshold was given (so 0, no outliers, can be asked for) */
  int type;              /* ggml block methods: the llama.cpp type (kernels/types.h) */
  /* gptq (quant/gptq.c): */
  float damp;            /* dampening, a fraction of the mean of diag(H) (default 0.01) */
  bool damp_set;         /* damp was given (so 0, no dampening, can be asked for) */
  bool act_order;        /* process columns in decreasing diag(H) (desc_act) */
  bool static_groups;    /* group grids from the original weights, before any update */
  int block;             /* lazy-batch block of columns (0 = 128) */
  bool no_true_sequential; /* true_sequential=0: the whole layer on the float layer's inputs (default:
                          q/k/v, o, gate/up, down in turn, each on the earlier ones quantized) */
  int n_threads;         /* threads a method may use (the driver sets it; 0 = its own default) */
  struct qlm_pool *pool; /* the driver's idle thread pool of n_threads (kernels/threadpool.h; borrowed, NULL:
                          * none), for methods that split rows across threads without starting their own */
  /* smoothquant / awq (quant/smoothquant.c, quant/awq.c): */
  float alpha;           /* migration strength (smoothquant default 0.5) */
  bool alpha_set;        /* awq: alpha given: no grid search, s = s_x^alpha */
  bool no_clip;          /* awq: skip the clipping search (clip=0; on by default, as llm-awq) */
  /* quanto (quant/quanto.c): */
  bool float8;           /* weights=qfloat8: float8 e4m3fn weights (bits is 8) */
  bool int_zero;         /* zeropoint=1: integer zero-point instead of a float shift (4/2 bits) */
  int dtype;             /* dtype=: the float type the model is run in (QLM_DTYPE_*; 0 = method default) */
  bool act_int8;         /* activations=qint8: static per-tensor int8 input scale from calibration */
  /* awq (quant/awq.c): */
  bool duo;              /* duo=1: AutoAWQ's duo scaling s = s_x^a / s_w^(1-a) (s_w: mean of normalized |W|) */
} qlm_quant_opts;

/* Work a method derived from one input's statistics alone and may reuse for the next matrix that
 * reads the same input (q/k/v share one input, gate/up another): GPTQ's inverse-Hessian factor.
 * The caller owns the memo, scopes it to one set of statistics and clears it after the last
 * matrix; the method fills it and checks `key` (its name and the options the work depends on)
 * before reusing it. */
typedef struct qlm_calib_memo {
  char key[96];          /* what `data` was made for ("" = empty) */
  void *data;            /* the method's, freed by free_data */
  void (*free_data)(void *data);
} qlm_calib_memo;

/* Empty the memo (free its data). */
void qlm_calib_memo_clear(qlm_calib_memo *m);

/* Calibration statistics of one linear layer's input, gathered by running the model on
 * calibration text (issue 4's methods use them; the methods of issue 3 ignore them). */
typedef struct qlm_calib {
  int64_t cols;          /* input features */
  int64_t n_tokens;      /* tokens seen */
  const float *act_absmax;/* [cols] max |x_j| over the tokens, or NULL */
  const float *act_sqmean;/* [cols] mean x_j^2, or NULL */
  const float *act_absmean;/* [cols] mean |x_j| (AWQ's activation salience), or NULL */
  const double *hessian; /* [cols x cols] sum x x^T / n_tokens (GPTQ), or NULL */
  int n_calls;           /* forward calls that fed the statistics (one per calibration window) */
  const float *call_absmax;/* [n_calls] max |x| over each call's whole input, in order (quanto's
                          per-batch absmax that its momentum rule averages), or NULL */
  qlm_calib_memo *memo;  /* shared by the matrices that read this input (see above), or NULL */
} qlm_calib;

/* A companion tensor: stored in the model file as "<weight name><suffix>". */
typedef struct qlm_qaux {
  char suffix[32];       /* e.g. ".absmax_q" */
  int type;              /* storage type (f32, i8, ...) */
  int64_t n;             /* elements (a 1-D tensor) */
  void *data;            /* owned, qlm_type_row_bytes(type, n) bytes */
  size_t bytes;
} qlm_qaux;

#define QLM_QAUX_MAX 4

typedef struct qlm_qtensor {
  int type;              /* storage type of the main tensor */
  int64_t rows, cols;
  size_t row_bytes;      /* qlm_type_row_bytes(type, cols) */
  void *data;            /* owned, rows * row_bytes */
  int n_aux;
  qlm_qaux aux[QLM_QAUX_MAX];
  /* Bits per weight of everything stored for this tensor (main + companions), exact. */
  double bpw;
  /* The method and options as stored in the file's metadata, e.g. "rtn bits=4 group=64 asym=0". */
  char desc[96];
  /* Set when the options had to be adapted to the shape (e.g. a group size that does not divide
   * the rows); the driver reports it. */
  char note[128];
} qlm_qtensor;

typedef struct qlm_quant_method {
  const char *name;      /* "rtn", "llm-int8", "nf4", ... (what --method takes) */
  const char *summary;   /* one line for --help */
  const char *options;   /* the option keys it takes, for --help, e.g. "bits group" */
  bool needs_calib;      /* quantize() needs calibration statistics of the layer's input */
  bool needs_hessian;    /* ... including the Hessian (cols^2 doubles per input) */
  /* When not NULL: whether these options need calibration statistics (overrides needs_calib;
   * quanto needs them only with activations=qint8). */
  bool (*wants_calib)(const qlm_quant_opts *o);
  /* Fill in the method's defaults for options left 0 (called before check and quantize). */
  void (*defaults)(qlm_quant_opts *o);
  /* Whether the options and shape are usable; on failure say why in err (QLM_EUSAGE for bad
   * options, QLM_EUNSUPPORTED for a shape the method cannot hold). */
  int (*check)(const qlm_quant_opts *o, int64_t rows, int64_t cols, qlm_error *err);
  /* Quantize W.  out is zeroed by the caller; on failure nothing is left allocated. */
  int (*quantize)(const float *W, int64_t rows, int64_t cols, const qlm_calib *calib, const qlm_quant_opts *o,
                  qlm_qtensor *out, qlm_error *err);
  /* Dequantize a result into W [rows x cols]; NULL when the main tensor's type has a dequantizer
   * of its own (qlm_dequantize) and no companions. */
  int (*dequantize)(const qlm_qtensor *q, float *W, qlm_error *err);
  /* Methods that migrate scale between activations and weights (SmoothQuant, AWQ): per input
   * channel factors s[cols] for the matrices W [rows x cols] (all that read one input, stacked)
   * given the input's statistics.  The driver then multiplies the matrices' columns by s, divides
   * the op that produces the input (the RMS/layer norm before them) by s — the float model's
   * outputs are unchanged — and quantizes the scaled matrices with the statistics of x / s.
   * NULL for other methods. */
  int (*input_scales)(const float *W, int64_t rows, int64_t cols, const qlm_calib *calib, const qlm_quant_opts *o,
                      float *s, qlm_error *err);
  /* Which inputs input_scales applies to: a bit mask of 1 << qlm_linear_slot (model/model.h:
   * 1 = q/k/v, 2 = attn_output, 4 = gate/up, 8 = ffn_down). */
  unsigned smooth_slots;
} qlm_quant_method;

/* The method called `name`, or NULL. */
const qlm_quant_method *qlm_quant_method_find(const char *name);
/* All methods, NULL-terminated. */
const qlm_quant_method *const *qlm_quant_methods(void);

/* Parse "key=value" words (bits=, group=, asym=, dq=, threshold=, type=, and gptq's damp=,
 * act_order= (or desc_act=), static_groups=, block=, true_sequential=) into o.  group takes
 * a number, "channel" or "tensor".  Unknown keys and bad values are usage errors naming `what`
 * (e.g. the rules file and line). */
int qlm_quant_opts_parse_kv(qlm_quant_opts *o, const char *key, const char *value, const char *what, qlm_error *err);

/* Helpers for methods. */
int qlm_qtensor_alloc(qlm_qtensor *q, int type, int64_t rows, int64_t cols, qlm_error *err);
/* The same without zeroing, for a method that writes every byte of every row (or frees the tensor):
 * no zeroing pass over the output in the calling thread, and fresh pages are first touched by the
 * threads that write them. */
int qlm_qtensor_alloc_unzeroed(qlm_qtensor *q, int type, int64_t rows, int64_t cols, qlm_error *err);
qlm_qaux *qlm_qtensor_add_aux(qlm_qtensor *q, const char *suffix, int type, int64_t n, qlm_error *err);
/* Sets q->bpw from the bytes of the main tensor and its companions. */
void qlm_qtensor_set_bpw(qlm_qtensor *q);
void qlm_qtensor_free(qlm_qtensor *q);

/* The methods (each in its own file). */
extern const qlm_quant_method qlm_method_absmax;    /* quant/rtn.c: RTN symmetric */
extern const qlm_quant_method qlm_method_zeropoint; /* quant/rtn.c: RTN asymmetric */
extern const qlm_quant_method qlm_method_llm_int8;  /* quant/llm_int8.c */
extern const qlm_quant_method qlm_method_nf4;       /* quant/bnb4.c */
extern const qlm_quant_method qlm_method_fp4;       /* quant/bnb4.c */
extern const qlm_quant_method qlm_method_ggml;      /* quant/ggml_block.c */
extern const qlm_quant_method qlm_method_hqq;       /* quant/hqq.c */
extern const qlm_quant_method qlm_method_gptq;      /* quant/gptq.c (needs calib->hessian) */
extern const qlm_quant_method qlm_method_smoothquant; /* quant/smoothquant.c (W8A8) */
extern const qlm_quant_method qlm_method_awq;      /* quant/awq.c (needs calib->hessian, act_absmean) */
extern const qlm_quant_method qlm_method_quanto;   /* quant/quanto.c (optimum-quanto weights) */

#endif
