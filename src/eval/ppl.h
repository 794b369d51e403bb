/* ppl.h — perplexity under the common protocols, as windows over token arrays.
 *
 * A protocol turns text into a *plan*: one token array (all documents concatenated) and a list
 * of windows.  A window is one fresh context: the tokens fed to the model and which of the next
 * tokens are scored.  The scorer (qlm_ppl_run) feeds several windows at once through the engine
 * (one sequence each in a multi-sequence state), takes log-softmax of the wanted rows and adds
 * -log p(target) per scored token.  PPL = exp(sum NLL / tokens scored).
 *
 * Protocols (text -> plan; exact definitions in docs of the tools named):
 *   hf-window  Hugging Face "Perplexity of fixed-length models": rows "\n\n"-joined, tokenized
 *              whole (with BOS if the tokenizer adds one); windows of max_length (1024) starting
 *              every stride (512) tokens; each window scores only the tokens no earlier window
 *              scored, so every token but the first is scored exactly once.  The guide's loss is
 *              the mean over those tokens, weighted by their count (its current code), i.e. the
 *              exact token mean.
 *   per-line   seed 000's code: the same windows, but each non-empty row of the dataset is
 *              tokenized and scored on its own (a row's first token is never scored); the NLL of
 *              all rows is pooled (sum NLL / sum tokens).
 *   llamacpp   llama.cpp tools/perplexity: text tokenized whole (BOS if the vocab adds it),
 *              floor(n / n_ctx) non-overlapping chunks of n_ctx (512), the remainder dropped; the
 *              first token of each chunk is replaced by BOS when the vocab adds BOS; the logits of
 *              positions n_ctx/2 .. n_ctx-2 are scored, i.e. n_ctx - n_ctx/2 - 1 tokens a chunk.
 *   lm-eval    lm-evaluation-harness (0.4.x) `wikitext`: the articles of EleutherAI/
 *              wikitext_document_level (a page per " = Title = " line; see plan_lm_eval), each
 *              detokenized (lm-eval's wikitext_detokenizer) and tokenized as HFLM.tok_encode does
 *              (the tokenizer's default special tokens: BOS where the vocab adds it); rolling
 *              windows of max_length (the model's n_ctx) with a prefix token (BOS, else EOS) before
 *              the first; every token scored exactly once.  Reports word_perplexity =
 *              exp(-LL / words) and byte_perplexity = exp(-LL / bytes) with words (re.split(r"\s+"))
 *              and UTF-8 bytes counted on the original page, and bits_per_byte = -LL / bytes / ln 2.
 *
 * "Rows" are the lines of wiki.test.raw as the HF dataset `wikitext-2-raw-v1` holds them: each
 * line with its "\n", whitespace-only lines as "".
 *
 * Two ways to the same windows: qlm_ppl_plan_text builds the whole plan (all ids, all windows) and
 * is kept as the reference; a qlm_ppl_stream (below) makes the windows from the text as they are
 * scored, in bounded memory, and gives the same windows, batches and bits (`qlm ppl` uses it). */
#ifndef QLM_PPL_H
#define QLM_PPL_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

typedef enum qlm_ppl_protocol {
  QLM_PPL_HF_WINDOW = 0,
  QLM_PPL_PER_LINE = 1,
  QLM_PPL_LLAMACPP = 2,
  QLM_PPL_LM_EVAL = 3,
} qlm_ppl_protocol;

/* "hf-window", "per-line", "llamacpp", "lm-eval"; parse returns -1 for an unknown name. */
const char *qlm_ppl_protocol_name(int protocol);
int qlm_ppl_protocol_parse(const char *name);

/* One fresh context.  Fed rows: [prefix if >= 0] then tokens[begin .. end-1) (the last token of
 * the range is only a target), with the first fed token replaced by replace_first if >= 0.  The
 * row before tokens[i] predicts tokens[i]; tokens[i] is scored when score_from <= i < end. */
typedef struct qlm_ppl_window {
  int64_t begin, end;    /* token range [begin, end) of the plan's array */
  int64_t score_from;    /* first scored token index (>= begin, > begin without prefix) */
  int32_t prefix;        /* token fed before tokens[begin], or -1 (lm-eval's BOS/EOS) */
  int32_t replace_first; /* token fed instead of the first fed token, or -1 (llama.cpp's BOS) */
} qlm_ppl_window;

typedef struct qlm_ppl_plan {
  int protocol;
  int32_t *tokens;       /* [n_tokens] all documents, concatenated */
  int64_t n_tokens;
  qlm_ppl_window *win;   /* [n_win] */
  int64_t n_win, cap_win;
  int64_t n_docs;        /* rows (per-line), articles (lm-eval), else 1 */
  double n_words, n_bytes; /* lm-eval: words and UTF-8 bytes of the original articles */
  int max_rows;          /* most rows fed by one window (the context the state needs) */
  int window, stride;    /* settings qlm_ppl_plan_text used (stride 0 where it does not apply) */
} qlm_ppl_plan;

/* Protocol settings.  0 means the protocol's default. */
typedef struct qlm_ppl_params {
  int window;  /* hf-window/per-line max_length (1024); llamacpp n_ctx (512); lm-eval max_length (model n_ctx) */
  int stride;  /* hf-window/per-line (512) */
} qlm_ppl_params;

void qlm_ppl_plan_free(qlm_ppl_plan *p);

/* The window a protocol uses: prm->window, else its default (llamacpp 512, lm-eval the model's
 * context, others 1024) capped by the model's context.  Rows fed per window are at most this. */
int qlm_ppl_window_for(int protocol, const qlm_ppl_params *prm, int model_ctx);

/* Window builders over tokens[begin, end) of the plan (already in p->tokens). */
int qlm_ppl_add_hf_windows(qlm_ppl_plan *p, int64_t begin, int64_t end, int max_len, int stride, qlm_error *err);
int qlm_ppl_add_llamacpp_chunks(qlm_ppl_plan *p, int n_ctx, int32_t bos, qlm_error *err);
int qlm_ppl_add_rolling_windows(qlm_ppl_plan *p, int64_t begin, int64_t end, int max_len, int32_t prefix,
                                qlm_error *err);
/* Tokens the plan scores (sum over windows). */
int64_t qlm_ppl_plan_scored(const qlm_ppl_plan *p);

/* Build the plan of a protocol from the raw dataset text.  model_ctx: the model's trained context
 * (windows may not exceed it; lm-eval's default max_length). */
int qlm_ppl_plan_text(const qlm_tokenizer *tok, const char *text, size_t len, int protocol,
                      const qlm_ppl_params *prm, int model_ctx, qlm_ppl_plan *p, qlm_error *err);

/* Tokenize text[0, len) as qlm_tokenize(tok, text, len, add_special, 0) does, but in pieces of
 * about piece_bytes (split only where the ids provably do not change: single newlines between
 * non-space ASCII characters; see ppl.c for the argument per tokenizer kind), handing the ids of
 * each piece to emit in order.  So a long text never needs all its ids, or more than one piece of
 * token work, in memory at once.  piece_bytes 0: one piece. */
typedef int (*qlm_ppl_ids_fn)(void *ctx, const int32_t *ids, int n, qlm_error *err);
int qlm_ppl_tokenize_pieces(const qlm_tokenizer *tok, const char *text, size_t len, int add_special, size_t piece_bytes,
                            qlm_ppl_ids_fn emit, void *ctx, qlm_error *err);

/* lm-eval's wikitext_detokenizer applied to one article (malloc'd, NUL-terminated). */
int qlm_wikitext_detokenize(const char *page, size_t len, char **out, qlm_error *err);

/* Called for every scored token in plan order (window by window, left to right) with the row's
 * logits [n_vocab] and its log-sum-exp; return nonzero (and fill err) to stop. */
typedef int (*qlm_ppl_token_fn)(void *ctx, int64_t index, int32_t target, const float *logits, double logsumexp,
                                qlm_error *err);

typedef struct qlm_ppl_opts {
  int batch;            /* windows run together (sequences of one state); default 4 */
  int ubatch;           /* rows per forward call at most; default 512 */
  int n_threads;        /* default 1 */
  int64_t max_windows;  /* stop after this many windows (0 = all) */
  qlm_ppl_token_fn on_token; /* optional (KL divergence) */
  void *ctx;
  /* optional, after each batch; n_windows is -1 while a stream does not know it (see qlm_ppl_stream_get_info
   * for the bytes read instead) */
  void (*progress)(void *ctx, int64_t windows_done, int64_t n_windows, double seconds);
} qlm_ppl_opts;

typedef struct qlm_ppl_stats {
  double nll_sum, nll2_sum; /* sum of -log p and of its square over scored tokens */
  int64_t n_scored;         /* tokens scored */
  int64_t n_nonfinite;      /* tokens skipped for a non-finite log-probability (only with --allow-nonfinite) */
  int64_t n_windows;        /* windows run */
  int64_t n_fed;            /* rows fed through the model */
  double seconds;           /* wall time of the scoring */
  double ppl, ppl_err;      /* exp(mean NLL); llama.cpp's error: ppl * sqrt(var(NLL) / (N-1)) */
} qlm_ppl_stats;

/* Run the plan through the model and fill st. */
int qlm_ppl_run(const qlm_model *m, const qlm_ppl_plan *p, const qlm_ppl_opts *o, qlm_ppl_stats *st, qlm_error *err);

/* ppl and its error from the sums (used by qlm_ppl_run and the KL report). */
void qlm_ppl_finish(qlm_ppl_stats *st);

/* ---- streaming: the plan of qlm_ppl_plan_text, made while it is scored ----
 *
 * The text (typically a mapping of the file, which the stream does not own and never copies
 * whole) is read in units — hf-window: pieces of about 64 KiB of the "\n\n"-joined rows, joined as
 * they are read; llamacpp: pieces of the raw text; per-line: one row; lm-eval: one article — each
 * tokenized as the whole-text path would tokenize it (pieces cut only where qlm_ppl_tokenize_pieces
 * may cut, so the ids are those of the whole text), and the protocol's windows are made from the
 * ids so far.  Only the ids from the first window still to be scored onwards are kept, and windows
 * are made only as the scorer asks for them.  Memory is then bounded by
 *   hf-window, llamacpp: one piece plus the tokens of one batch of windows — except for
 *     vocabularies whose texts qlm_ppl_tokenize_pieces does not split (a vocabulary that adds EOS;
 *     an SPM token containing "\n"), and for a text without a split point (SPM: without "\n"),
 *     which are tokenized whole as before;
 *   per-line: the longest row; lm-eval: the longest article (a document-level protocol: an
 *     article is detokenized and tokenized as one text, as lm-eval does).
 * The scorer's batch and state depend on max_rows, the most rows any window of the whole text
 * feeds.  hf-window and llamacpp know it from their first window; per-line and lm-eval read ahead
 * (up to 2^20 ids) until a window fills the context, and when none does, tokenize the rest of the
 * text once more without keeping anything to find it (so these two read the whole text even with
 * --chunks; hf-window and llamacpp stop reading at the window after the last one scored).
 * Errors about the text are prefixed with `name` (the file, may be NULL). */
typedef struct qlm_ppl_stream qlm_ppl_stream;

/* max_windows: windows scored at most (0 = all; --chunks).  The settings are checked as
 * qlm_ppl_plan_text checks them; text errors come while the text is read. */
int qlm_ppl_stream_open(const qlm_tokenizer *tok, const char *text, size_t len, const char *name, int protocol,
                        const qlm_ppl_params *prm, int model_ctx, int64_t max_windows, qlm_ppl_stream **out,
                        qlm_error *err);
/* The plan's max_rows (reads ahead as described above); fails like qlm_ppl_plan_text when the text
 * gives no window. */
int qlm_ppl_stream_max_rows(qlm_ppl_stream *s, int *max_rows, qlm_error *err);
/* Score the stream's windows as qlm_ppl_run scores the plan's (o->max_windows is not used: the
 * stream's own limit is).  st->n_windows: windows scored. */
int qlm_ppl_run_stream(const qlm_model *m, qlm_ppl_stream *s, const qlm_ppl_opts *o, qlm_ppl_stats *st, qlm_error *err);

typedef struct qlm_ppl_stream_info {
  int protocol, window, stride, max_rows;
  int64_t n_tokens, n_win, n_docs; /* so far: ids, windows made, documents (as in qlm_ppl_plan) */
  double n_words, n_bytes;         /* lm-eval, so far */
  size_t bytes_read, text_bytes;   /* bytes of the text consumed, of text_bytes */
  int complete;                    /* the whole text was read: the counts are the plan's */
  int64_t tokens_held;             /* ids in memory now */
} qlm_ppl_stream_info;
void qlm_ppl_stream_get_info(const qlm_ppl_stream *s, qlm_ppl_stream_info *info);
void qlm_ppl_stream_free(qlm_ppl_stream *s);

/* Test hooks (0 = the defaults above): bytes per tokenizer piece; ids read ahead before the rest
 * of a per-line / lm-eval text is counted for max_rows. */
extern size_t qlm_ppl_test_piece_bytes;
extern int64_t qlm_ppl_test_lookahead_tokens;

#endif
