/* cmd_info.c — `qlm info MODEL`: what a model file holds. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static const char *arch_name(qlm_arch a) {
  switch (a) {
  case QLM_ARCH_LLAMA: return "llama";
  case QLM_ARCH_QWEN2: return "qwen2";
  case QLM_ARCH_GPT2: return "gpt2";
  }
  return "?";
}

static const char *rope_name(qlm_rope_style r) {
  return r == QLM_ROPE_INTERLEAVED ? "interleaved pairs" : r == QLM_ROPE_NEOX ? "rotate-half (neox)" : "none";
}

static const char *tok_name(qlm_tok_kind k) {
  return k == QLM_TOK_SPM ? "sentencepiece-bpe" : k == QLM_TOK_BPE ? "byte-level-bpe" : "none";
}

/* One metadata value on one line; arrays show their length and first elements. */
static void print_meta(const qlm_meta *m) {
  printf("  %-44s ", m->key);
  switch (m->type) {
  case QLM_META_STRING: {
    const char *s = m->v.s;
    size_t n = strcspn(s, "\n");
    printf("\"%.*s%s\"\n", (int)(n > 60 ? 60 : n), s, (n > 60 || s[n]) ? "..." : "");
    break;
  }
  case QLM_META_F32: case QLM_META_F64: printf("%g\n", m->v.f); break;
  case QLM_META_BOOL: printf("%s\n", m->v.u ? "true" : "false"); break;
  case QLM_META_I8: case QLM_META_I16: case QLM_META_I32: case QLM_META_I64: printf("%" PRId64 "\n", m->v.i); break;
  case QLM_META_ARRAY:
    if (m->arr_type == QLM_META_STRING && m->arr_len > 0)
      printf("[%" PRIu64 " strings: \"%.20s\", ...]\n", m->arr_len, ((char *const *)m->arr)[0]);
    else
      printf("[%" PRIu64 " values]\n", m->arr_len);
    break;
  default: printf("%" PRIu64 "\n", m->v.u); break;
  }
}

/* The tensor whose companion t is (its name plus a suffix such as ".absmax_q", quant/method.h),
 * or -1. */
static int companion_of(const qlm_source *s, const qlm_tensor *t) {
  const char *dot = strstr(t->name, ".weight.");
  if (!dot) return -1;
  size_t n = (size_t)(dot - t->name) + strlen(".weight");
  for (int i = 0; i < s->n_tensors; i++)
    if (strlen(s->tensors[i].name) == n && !strncmp(s->tensors[i].name, t->name, n)) return i;
  return -1;
}

static int64_t n_elems(const qlm_tensor *t) { return t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]; }

/* Bytes of tensor i with its companions. */
static size_t bytes_with_companions(const qlm_source *s, int i) {
  size_t b = s->tensors[i].nbytes;
  for (int j = 0; j < s->n_tensors; j++)
    if (companion_of(s, &s->tensors[j]) == i) b += s->tensors[j].nbytes;
  return b;
}

static const char *tensor_method(const qlm_source *s, const char *name) {
  char key[320];
  snprintf(key, sizeof key, "qlm.tensor.%s.method", name);
  const qlm_meta *m = qlm_source_meta(s, key);
  return m && m->type == QLM_META_STRING ? m->v.s : NULL;
}

/* The calibration a quantized file was made with (qlm.calib.*, quant/quantize.c), if any. */
static void print_calibration(const qlm_source *s) {
  const qlm_meta *text = qlm_source_meta(s, "qlm.calib.text"), *n = qlm_source_meta(s, "qlm.calib.samples");
  const qlm_meta *len = qlm_source_meta(s, "qlm.calib.len"), *seed = qlm_source_meta(s, "qlm.calib.seed");
  const qlm_meta *dt = qlm_source_meta(s, "qlm.calib.dtype");
  if (!text || text->type != QLM_META_STRING || !n || n->type != QLM_META_U32 || !len || len->type != QLM_META_U32 ||
      !seed || seed->type != QLM_META_U64)
    return;
  printf("calibrated:   %u windows of %u tokens from %s, seed %" PRIu64 ", products in %s\n", (unsigned)n->v.u,
         (unsigned)len->v.u, text->v.s, (uint64_t)seed->v.u, dt && dt->type == QLM_META_STRING ? dt->v.s : "f32");
}

static void print_summary(const qlm_source *s) {
  const qlm_hparams *h = &s->hp;
  int64_t params = 0, q_params = 0;
  size_t bytes = 0, q_bytes = 0;
  for (int i = 0; i < s->n_tensors; i++) {
    bytes += s->tensors[i].nbytes;
    if (companion_of(s, &s->tensors[i]) >= 0) continue; /* not weights */
    params += n_elems(&s->tensors[i]);
    if (tensor_method(s, s->tensors[i].name)) {
      q_params += n_elems(&s->tensors[i]);
      q_bytes += bytes_with_companions(s, i);
    }
  }
  printf("model:        %s (%s)\n", s->path, s->format);
  if (h->n_layer > 0) {
    printf("architecture: %s, rope %s, theta %g\n", arch_name(h->arch), rope_name(h->rope_style), h->rope_theta);
    printf("hparams:      n_vocab %d, n_ctx %d, n_embd %d, n_ff %d, n_layer %d, n_head %d, n_head_kv %d, head_dim %d, "
           "norm_eps %g, tied_embeddings %s\n",
           h->n_vocab, h->n_ctx, h->n_embd, h->n_ff, h->n_layer, h->n_head, h->n_head_kv, h->head_dim, h->norm_eps,
           h->tied_embeddings ? "yes" : "no");
  } else {
    const qlm_meta *a = qlm_source_meta(s, "general.architecture");
    printf("architecture: %s (no runnable model in this file)\n", a && a->type == QLM_META_STRING ? a->v.s : "?");
  }
  printf("parameters:   %" PRId64 " (%.2f M) in %d tensors, %zu bytes, %.3f bits/weight\n", params, params / 1e6,
         s->n_tensors, bytes, params ? 8.0 * (double)bytes / (double)params : 0.0);
  const qlm_meta *qm = qlm_source_meta(s, "qlm.quantize.method");
  if (qm && qm->type == QLM_META_STRING) {
    const qlm_meta *rules = qlm_source_meta(s, "qlm.quantize.rules");
    printf("quantized:    by qlm, default method '%s'%s; %" PRId64 " weights in quantized tensors at %.3f bits/weight\n",
           qm->v.s, rules ? " with rules (see --meta)" : "", q_params,
           q_params ? 8.0 * (double)q_bytes / (double)q_params : 0.0);
    print_calibration(s);
  }
  const qlm_vocab *v = &s->vocab;
  printf("tokenizer:    %s, %d tokens, %d merges, pre '%s', bos %d, eos %d, add_bos %s\n", tok_name(v->kind), v->n_tokens,
         v->n_merges, v->pre, v->bos_id, v->eos_id, v->add_bos ? "yes" : "no");
}

static void print_tensors(const qlm_source *s) {
  printf("\n  %-32s %-14s %-18s %12s %8s  %s\n", "tensor", "type", "shape (ne0 first)", "bytes", "bits/w", "method");
  for (int i = 0; i < s->n_tensors; i++) {
    const qlm_tensor *t = &s->tensors[i];
    char shape[64];
    int n = snprintf(shape, sizeof shape, "%" PRId64, t->ne[0]);
    for (int d = 1; d < t->n_dims && n < (int)sizeof shape; d++)
      n += snprintf(shape + n, sizeof shape - (size_t)n, " x %" PRId64, t->ne[d]);
    int64_t count = n_elems(t);
    bool comp = companion_of(s, t) >= 0;
    size_t b = comp ? t->nbytes : bytes_with_companions(s, i); /* a weight's bytes include its companions */
    const char *method = tensor_method(s, t->name);
    char bpw[16] = "";
    if (!comp && count) snprintf(bpw, sizeof bpw, "%.3f", 8.0 * (double)b / (double)count);
    printf("  %-32s %-14s %-18s %12zu %8s  %s\n", t->name, qlm_type_name(t->type), shape, b, bpw,
           comp ? "(companion)" : method ? method : "");
  }
}

static void usage(FILE *f) {
  fprintf(f, "usage: qlm info [MODEL] [options]\n\n"
             "Shows architecture, hyper-parameters, parameter count, tokenizer, and per tensor its type,\n"
             "shape, bytes and bits per weight.\n\n"
             "  -m, --model PATH      model (GGUF file, HF folder, llama2.c .bin); default %s\n"
             "      --tokenizer PATH  tokenizer file overriding the model's (tokenizer.bin / tokenizer.json)\n"
             "      --meta            also list every metadata key\n"
             "      --no-tensors      omit the per-tensor table\n",
          cli_default_model());
}

int cmd_info(int argc, char **argv) {
  static const struct option opts[] = {{"model", required_argument, 0, 'm'}, {"tokenizer", required_argument, 0, 'T'},
                                       {"meta", no_argument, 0, 'M'},        {"no-tensors", no_argument, 0, 'N'},
                                       {"help", no_argument, 0, 'h'},        {0, 0, 0, 0}};
  const char *model = NULL, *tokenizer = NULL;
  int show_meta = 0, show_tensors = 1, c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "m:h", opts, NULL)) != -1) {
    switch (c) {
    case 'm': model = optarg; break;
    case 'T': tokenizer = optarg; break;
    case 'M': show_meta = 1; break;
    case 'N': show_tensors = 0; break;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return QLM_EUSAGE;
    }
  }
  if (optind < argc) model = argv[optind++];
  if (optind < argc) {
    fprintf(stderr, "qlm info: unexpected argument '%s'\n", argv[optind]);
    return QLM_EUSAGE;
  }
  if (!model) model = cli_default_model();
  qlm_error err = {0};
  qlm_source *src;
  if (qlm_source_open(model, tokenizer, &src, &err)) return cli_report(&err);
  print_summary(src);
  if (show_meta) {
    printf("\nmetadata (%d keys):\n", src->n_meta);
    for (int i = 0; i < src->n_meta; i++) print_meta(&src->meta[i]);
  }
  if (show_tensors) print_tensors(src);
  qlm_source_close(src);
  return 0;
}
