/* llama2c.c — llama2.c "legacy v0" checkpoints (run.c's format) and tokenizer.bin.
 *
 * Checkpoint: 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len),
 * a negative vocab_size meaning "classifier not shared", then float32 arrays in run.c's
 * order, each covering all layers:
 *   token_embedding_table [vocab, dim]       rms_att_weight [layer, dim]
 *   wq [layer, dim, dim]  wk [layer, kv_dim, dim]  wv [layer, kv_dim, dim]  wo [layer, dim, dim]
 *   rms_ffn_weight [layer, dim]  w1 [layer, hidden, dim]  w2 [layer, dim, hidden]  w3 [layer, hidden, dim]
 *   rms_final_weight [dim]  freq_cis_real [seq_len, head_size/2]  freq_cis_imag (same)
 *   wcls [vocab, dim]  (only when not shared)
 * (shapes row-major, [out, in] for matrices; kv_dim = n_kv_heads * head_size).  Rows are
 * already in the interleaved RoPE layout.  Tensors point straight into the mmap. */
#include "formats/llama2c.h"

#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/mapfile.h"
#include "formats/source.h"

#define L2C_HEADER_BYTES 28
#define L2C_MAX_TOKENIZER (64u << 20)
#define L2C_MAX_TOKEN_LEN 65536

typedef struct l2c_header {
  int dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
} l2c_header;

typedef struct l2c_priv {
  qlm_mapfile map;
} l2c_priv;

static void l2c_free_priv(void *p) {
  l2c_priv *l = p;
  if (!l) return;
  qlm_unmap_file(&l->map);
  free(l);
}

static int32_t rd_i32(const unsigned char *p) {
  uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
  int32_t v;
  memcpy(&v, &u, 4);
  return v;
}

static int check_field(const char *path, const char *name, int v, int hi, qlm_error *err) {
  if (v <= 0) return qlm_fail(err, QLM_EFORMAT, "%s: header %s = %d must be positive (not a llama2.c checkpoint?)", path, name, v);
  if (v > hi) return qlm_fail(err, QLM_ELIMIT, "%s: header %s = %d exceeds the limit %d", path, name, v, hi);
  return QLM_OK;
}

static int check_header(const char *path, const l2c_header *h, int n_vocab, qlm_error *err) {
  int rc;
  if ((rc = check_field(path, "dim", h->dim, 1 << 16, err)) ||
      (rc = check_field(path, "hidden_dim", h->hidden_dim, 1 << 20, err)) ||
      (rc = check_field(path, "n_layers", h->n_layers, 4096, err)) ||
      (rc = check_field(path, "n_heads", h->n_heads, h->dim, err)) ||
      (rc = check_field(path, "n_kv_heads", h->n_kv_heads, h->n_heads, err)) ||
      (rc = check_field(path, "|vocab_size|", n_vocab, 1 << 22, err)) ||
      (rc = check_field(path, "seq_len", h->seq_len, 1 << 24, err)))
    return rc;
  if (h->dim % h->n_heads || (h->dim / h->n_heads) % 2)
    return qlm_fail(err, QLM_EFORMAT, "%s: dim %d / n_heads %d must be a whole, even head size", path, h->dim,
                    h->n_heads);
  if (h->n_heads % h->n_kv_heads)
    return qlm_fail(err, QLM_EFORMAT, "%s: n_heads %d is not a multiple of n_kv_heads %d", path, h->n_heads,
                    h->n_kv_heads);
  return QLM_OK;
}

/* Running offset (in floats) through the file; *bad set on overflow. */
typedef struct cursor {
  size_t pos;
  int bad;
} cursor;

/* Reserve a*b*c floats; returns the start offset (in floats). */
static size_t take(cursor *c, size_t a, size_t b, size_t d) {
  size_t n, start = c->pos;
  if (qlm_mul_overflow(a, b, &n) || qlm_mul_overflow(n, d, &n) || qlm_add_overflow(c->pos, n, &c->pos)) c->bad = 1;
  return start;
}

typedef struct l2c_layout { /* float offsets of each array, from the first weight */
  size_t emb, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final, wcls, total;
} l2c_layout;

static int layout(const char *path, const l2c_header *h, int n_vocab, bool shared, size_t file_size, l2c_layout *L,
                  qlm_error *err) {
  size_t D = (size_t)h->dim, H = (size_t)h->hidden_dim, NL = (size_t)h->n_layers, V = (size_t)n_vocab;
  size_t hs = D / (size_t)h->n_heads, KV = (size_t)h->n_kv_heads * hs;
  cursor c = {0, 0};
  L->emb = take(&c, V, D, 1);
  L->rms_att = take(&c, NL, D, 1);
  L->wq = take(&c, NL, D, D);
  L->wk = take(&c, NL, KV, D);
  L->wv = take(&c, NL, KV, D);
  L->wo = take(&c, NL, D, D);
  L->rms_ffn = take(&c, NL, D, 1);
  L->w1 = take(&c, NL, H, D);
  L->w2 = take(&c, NL, D, H);
  L->w3 = take(&c, NL, H, D);
  L->rms_final = take(&c, D, 1, 1);
  take(&c, (size_t)h->seq_len, hs / 2, 2); /* freq_cis_real + freq_cis_imag: RoPE tables, recomputed */
  L->wcls = shared ? L->emb : take(&c, V, D, 1);
  L->total = c.pos;
  size_t bytes;
  if (c.bad || qlm_mul_overflow(c.pos, 4, &bytes) || qlm_add_overflow(bytes, L2C_HEADER_BYTES, &bytes))
    return qlm_fail(err, QLM_ELIMIT, "%s: header sizes overflow (dim %d, hidden_dim %d, n_layers %d)", path, h->dim,
                    h->hidden_dim, h->n_layers);
  if (bytes != file_size)
    return qlm_fail(err, QLM_EFORMAT,
                    "%s: file is %zu bytes but its header (dim %d, hidden_dim %d, n_layers %d, n_heads %d, n_kv_heads "
                    "%d, vocab_size %d, seq_len %d) implies %zu bytes",
                    path, file_size, h->dim, h->hidden_dim, h->n_layers, h->n_heads, h->n_kv_heads, h->vocab_size,
                    h->seq_len, bytes);
  return QLM_OK;
}

/* Add one whole-model tensor of canonical shape [ne0, ne1] at float offset `off`. */
static int add(qlm_source *src, const float *w, size_t off, const char *name, int64_t ne0, int64_t ne1,
               qlm_error *err) {
  int64_t ne[2] = {ne0, ne1};
  size_t count = (size_t)ne0 * (size_t)ne1; /* bounded by the layout check */
  if (!qlm_source_add_tensor(src, name, QLM_TYPE_F32, ne1 > 1 ? 2 : 1, ne, w + off, count * 4, err))
    return err ? err->code : QLM_ENOMEM;
  return QLM_OK;
}

static int add_tensors(qlm_source *src, const float *w, const l2c_layout *L, qlm_error *err) {
  const qlm_hparams *hp = &src->hp;
  int64_t D = hp->n_embd, F = hp->n_ff, KV = (int64_t)hp->n_head_kv * hp->head_dim;
  int rc;
  if ((rc = add(src, w, L->emb, "token_embd.weight", D, hp->n_vocab, err))) return rc;
  /* canonical order: per layer, as GGUF files list them */
  static const char *names[] = {"attn_norm.weight", "attn_q.weight",   "attn_k.weight",  "attn_v.weight", "attn_output.weight",
                                "ffn_norm.weight",  "ffn_gate.weight", "ffn_down.weight", "ffn_up.weight"};
  const size_t offs[] = {L->rms_att, L->wq, L->wk, L->wv, L->wo, L->rms_ffn, L->w1, L->w2, L->w3};
  const int64_t ne0[] = {D, D, D, D, D, D, D, F, D};
  const int64_t ne1[] = {1, D, KV, KV, D, 1, F, D, F};
  for (int l = 0; l < hp->n_layer; l++)
    for (int k = 0; k < 9; k++) {
      char full[64];
      snprintf(full, sizeof full, "blk.%d.%s", l, names[k]);
      int64_t ne[2] = {ne0[k], ne1[k]};
      size_t count = (size_t)ne0[k] * (size_t)ne1[k];
      if (!qlm_source_add_tensor(src, full, QLM_TYPE_F32, ne1[k] > 1 ? 2 : 1, ne, w + offs[k] + (size_t)l * count,
                                 count * 4, err))
        return err ? err->code : QLM_ENOMEM;
    }
  if ((rc = add(src, w, L->rms_final, "output_norm.weight", D, 1, err))) return rc;
  if (!hp->tied_embeddings && (rc = add(src, w, L->wcls, "output.weight", D, hp->n_vocab, err))) return rc;
  return QLM_OK;
}

static int add_meta(qlm_source *src, const l2c_header *h, qlm_error *err) {
  qlm_meta *m = qlm_source_add_meta(src, "general.architecture", err);
  if (!m) return err ? err->code : QLM_ENOMEM;
  m->type = QLM_META_STRING;
  if (!(m->v.s = strdup("llama"))) return qlm_fail(err, QLM_ENOMEM, "out of memory");
  const char *keys[] = {"llama2c.dim", "llama2c.hidden_dim", "llama2c.n_layers", "llama2c.n_heads",
                        "llama2c.n_kv_heads", "llama2c.vocab_size", "llama2c.seq_len"};
  const int vals[] = {h->dim, h->hidden_dim, h->n_layers, h->n_heads, h->n_kv_heads, h->vocab_size, h->seq_len};
  for (int i = 0; i < 7; i++) {
    if (!(m = qlm_source_add_meta(src, keys[i], err))) return err ? err->code : QLM_ENOMEM;
    m->type = QLM_META_I32;
    m->v.i = vals[i];
  }
  return QLM_OK;
}

/* ---- tokenizer.bin --------------------------------------------------------------------- */

static bool is_byte_token(const unsigned char *s, int len) {
  static const char hex[] = "0123456789ABCDEF";
  return len == 6 && memcmp(s, "<0x", 3) == 0 && s[5] == '>' && s[3] && s[4] && strchr(hex, s[3]) &&
         strchr(hex, s[4]);
}

/* Token text as the vocab stores SPM tokens: llama2.c wrote "▁" as ' ' and BOS/EOS as "\n<s>\n". */
static char *spm_text(int id, const unsigned char *s, int len, int *out_len) {
  static const char *special[3] = {"<unk>", "<s>", "</s>"};
  if (id < 3) {
    *out_len = (int)strlen(special[id]);
    return strdup(special[id]);
  }
  int spaces = 0;
  for (int i = 0; i < len; i++) spaces += s[i] == ' ';
  char *t = malloc((size_t)len + 2 * (size_t)spaces + 1);
  if (!t) return NULL;
  int k = 0;
  for (int i = 0; i < len; i++) {
    if (s[i] == ' ') {
      memcpy(t + k, "\xe2\x96\x81", 3);
      k += 3;
    } else {
      t[k++] = (char)s[i];
    }
  }
  t[k] = 0;
  *out_len = k;
  return t;
}

/* First pass: validate the structure and count tokens. */
static int scan_tokens(const char *path, const unsigned char *d, size_t n, int *count, qlm_error *err) {
  if (n < 4) return qlm_fail(err, QLM_EFORMAT, "%s: file is %zu bytes, too short for max_token_length", path, n);
  int32_t maxlen = rd_i32(d);
  if (maxlen <= 0 || maxlen > L2C_MAX_TOKEN_LEN)
    return qlm_fail(err, QLM_EFORMAT, "%s: max_token_length %d is outside [1, %d]", path, maxlen, L2C_MAX_TOKEN_LEN);
  size_t pos = 4;
  int k = 0;
  while (pos < n) {
    if (k >= (1 << 22)) return qlm_fail(err, QLM_ELIMIT, "%s: more than %d tokens", path, 1 << 22);
    if (n - pos < 8)
      return qlm_fail(err, QLM_EFORMAT, "%s: truncated: token %d's score and length need 8 bytes at offset %zu, %zu left",
                      path, k, pos, n - pos);
    int32_t len = rd_i32(d + pos + 4);
    if (len < 0 || len > maxlen)
      return qlm_fail(err, QLM_EFORMAT, "%s: token %d: length %d is outside [0, max_token_length %d]", path, k, len,
                      maxlen);
    pos += 8;
    if ((size_t)len > n - pos)
      return qlm_fail(err, QLM_EFORMAT, "%s: truncated: token %d needs %d bytes at offset %zu, %zu left", path, k, len,
                      pos, n - pos);
    pos += (size_t)len;
    k++;
  }
  *count = k;
  return QLM_OK;
}

static int fill_vocab(const unsigned char *d, int count, qlm_vocab *v, qlm_error *err) {
  v->tokens = qlm_calloc((size_t)count, sizeof *v->tokens, "vocab tokens", err);
  v->token_len = qlm_calloc((size_t)count, sizeof *v->token_len, "vocab token lengths", err);
  v->scores = qlm_calloc((size_t)count, sizeof *v->scores, "vocab scores", err);
  v->token_type = qlm_calloc((size_t)count, sizeof *v->token_type, "vocab token types", err);
  if (!v->tokens || !v->token_len || !v->scores || !v->token_type) return QLM_ENOMEM;
  v->n_tokens = count; /* from here qlm_vocab_free releases what was filled */
  size_t pos = 4;
  for (int i = 0; i < count; i++) {
    uint32_t sb = (uint32_t)rd_i32(d + pos);
    memcpy(&v->scores[i], &sb, 4);
    int len = rd_i32(d + pos + 4);
    pos += 8;
    v->tokens[i] = spm_text(i, d + pos, len, &v->token_len[i]);
    if (!v->tokens[i]) return qlm_fail(err, QLM_ENOMEM, "out of memory reading tokens");
    v->token_type[i] = i == 0 ? QLM_TOKATTR_UNKNOWN
                       : i < 3 ? QLM_TOKATTR_CONTROL
                       : is_byte_token(d + pos, len) ? QLM_TOKATTR_BYTE
                                                      : QLM_TOKATTR_NORMAL;
    pos += (size_t)len;
  }
  v->kind = QLM_TOK_SPM;
  snprintf(v->pre, sizeof v->pre, "default");
  v->unk_id = 0;
  v->bos_id = count > 1 ? 1 : -1;
  v->eos_id = count > 2 ? 2 : -1;
  v->pad_id = -1;
  v->add_bos = true;
  v->add_eos = false;
  v->add_space_prefix = true;
  return QLM_OK;
}

int qlm_llama2c_read_tokenizer(const char *path, int n_vocab, qlm_vocab *v, qlm_error *err) {
  char *buf = NULL;
  size_t n = 0;
  int rc = qlm_read_file(path, L2C_MAX_TOKENIZER, &buf, &n, err);
  if (rc) return rc;
  const unsigned char *d = (const unsigned char *)buf;
  int count = 0;
  rc = scan_tokens(path, d, n, &count, err);
  if (!rc && count < 3) rc = qlm_fail(err, QLM_EFORMAT, "%s: only %d tokens (need at least <unk>, <s>, </s>)", path, count);
  if (!rc && n_vocab > 0 && count != n_vocab)
    rc = qlm_fail(err, QLM_EFORMAT, "%s: holds %d tokens but the model's vocab_size is %d", path, count, n_vocab);
  if (!rc) {
    rc = fill_vocab(d, count, v, err);
    if (rc) qlm_vocab_free(v);
  }
  free(buf);
  return rc;
}

/* Default tokenizer: tokenizer.bin beside the checkpoint, else the first tok*.bin there. NULL if none. */
static char *find_tokenizer(const char *model_path) {
  const char *slash = strrchr(model_path, '/');
  int dlen = slash ? (int)(slash - model_path) : 1;
  const char *dir = slash ? model_path : ".";
  char *p = NULL;
  struct stat st;
  if (asprintf(&p, "%.*s/tokenizer.bin", dlen, dir) < 0) return NULL;
  if (stat(p, &st) == 0 && S_ISREG(st.st_mode)) return p;
  free(p);
  char *pattern = NULL;
  if (asprintf(&pattern, "%.*s/tok*.bin", dlen, dir) < 0) return NULL;
  glob_t g;
  p = NULL;
  if (glob(pattern, 0, NULL, &g) == 0 && g.gl_pathc > 0) p = strdup(g.gl_pathv[0]); /* sorted: deterministic */
  globfree(&g);
  free(pattern);
  return p;
}

/* ---- entry point ----------------------------------------------------------------------- */

static int l2c_load(const char *path, const char *tokenizer_bin, qlm_source *src, l2c_priv *p, qlm_error *err) {
  int rc = qlm_map_file(path, &p->map, err);
  if (rc) return rc;
  if (p->map.size < L2C_HEADER_BYTES)
    return qlm_fail(err, QLM_EFORMAT, "%s: file is %zu bytes, too short for the 28-byte llama2.c header", path,
                    p->map.size);
  int32_t f[7];
  for (int i = 0; i < 7; i++) f[i] = rd_i32(p->map.data + 4 * i);
  l2c_header h = {f[0], f[1], f[2], f[3], f[4], f[5], f[6]};
  bool shared = h.vocab_size > 0;
  int n_vocab = h.vocab_size == INT32_MIN ? -1 : h.vocab_size < 0 ? -h.vocab_size : h.vocab_size;
  l2c_layout L;
  if ((rc = check_header(path, &h, n_vocab, err)) || (rc = layout(path, &h, n_vocab, shared, p->map.size, &L, err)))
    return rc;

  qlm_hparams *hp = &src->hp;
  hp->arch = QLM_ARCH_LLAMA;
  hp->n_vocab = n_vocab;
  hp->n_ctx = h.seq_len;
  hp->n_embd = h.dim;
  hp->n_ff = h.hidden_dim;
  hp->n_layer = h.n_layers;
  hp->n_head = h.n_heads;
  hp->n_head_kv = h.n_kv_heads;
  hp->head_dim = hp->n_rot = h.dim / h.n_heads;
  hp->norm_eps = 1e-5f;
  hp->rope_theta = 10000.0f;
  hp->rope_style = QLM_ROPE_INTERLEAVED;
  hp->tied_embeddings = shared;

  const float *w = (const float *)(p->map.data + L2C_HEADER_BYTES); /* 28 is a multiple of 4: aligned */
  if ((rc = add_tensors(src, w, &L, err)) || (rc = add_meta(src, &h, err))) return rc;

  char *tok = tokenizer_bin ? strdup(tokenizer_bin) : find_tokenizer(path);
  if (!tok) return tokenizer_bin ? qlm_fail(err, QLM_ENOMEM, "out of memory") : QLM_OK; /* no tokenizer: vocab empty */
  rc = qlm_llama2c_read_tokenizer(tok, n_vocab, &src->vocab, err);
  free(tok);
  return rc;
}

int qlm_llama2c_open(const char *path, const char *tokenizer_bin, qlm_source **out, qlm_error *err) {
  *out = NULL;
  qlm_source *src = qlm_source_new(path, "llama2c", err);
  if (!src) return QLM_ENOMEM;
  l2c_priv *p = qlm_calloc(1, sizeof *p, "llama2c reader state", err);
  if (!p) {
    qlm_source_close(src);
    return QLM_ENOMEM;
  }
  src->priv = p;
  src->free_priv = l2c_free_priv;
  int rc = l2c_load(path, tokenizer_bin, src, p, err);
  if (rc) {
    qlm_source_close(src);
    return rc;
  }
  *out = src;
  return QLM_OK;
}
