/* vocab.h — the description of a tokenizer that model readers fill in.
 *
 * Readers translate what their format stores (GGUF tokenizer.ggml.*, HF tokenizer.json,
 * llama2.c tokenizer.bin) into this struct; tokenizer/tokenizer.h builds a working
 * tokenizer from it.  All strings are owned by the vocab (freed by qlm_vocab_free). */
#ifndef QLM_VOCAB_H
#define QLM_VOCAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum qlm_tok_kind {
  QLM_TOK_NONE = 0,
  QLM_TOK_SPM = 1, /* SentencePiece-style BPE driven by scores; "▁" for spaces; <0xXX> byte fallback */
  QLM_TOK_BPE = 2, /* byte-level BPE driven by merge ranks; GPT-2 byte->unicode mapping; regex pre-tokenizer */
} qlm_tok_kind;

/* Token attributes, values as GGUF tokenizer.ggml.token_type. */
enum { QLM_TOKATTR_NORMAL = 1, QLM_TOKATTR_UNKNOWN = 2, QLM_TOKATTR_CONTROL = 3,
       QLM_TOKATTR_USER_DEFINED = 4, QLM_TOKATTR_UNUSED = 5, QLM_TOKATTR_BYTE = 6 };

typedef struct qlm_vocab {
  qlm_tok_kind kind;
  int n_tokens;
  char **tokens;       /* [n_tokens] token text as stored (SPM: with ▁; BPE: byte-to-unicode mapped) */
  int *token_len;      /* [n_tokens] byte length of tokens[i] (tokens may hold NUL only in llama2.c byte tokens) */
  float *scores;       /* [n_tokens] SPM merge scores, or NULL */
  int32_t *token_type; /* [n_tokens] QLM_TOKATTR_*, or NULL (all normal) */
  int n_merges;
  char **merges;       /* [n_merges] "left right", rank = index (BPE only) */
  char pre[64];        /* pre-tokenizer name as llama.cpp's tokenizer.ggml.pre ("default", "llama-bpe",
                          "gpt-2", "smollm", "qwen2", "starcoder", "falcon", "deepseek-llm", ...) */
  int bos_id, eos_id, unk_id, pad_id; /* -1 when absent */
  bool add_bos;        /* prepend BOS when encoding with add_special */
  bool add_eos;
  bool add_space_prefix; /* SPM: prepend a space (▁) to the text */
} qlm_vocab;

void qlm_vocab_init(qlm_vocab *v); /* zero + ids = -1 */
void qlm_vocab_free(qlm_vocab *v);

/* Length of the longest prefix of s[0..n) that is well-formed UTF-8 (RFC 3629: no overlong
 * forms, surrogates or code points above U+10FFFF); n when all of it is.  Readers check names
 * and JSON text with it, so a message can name the offset of the first bad byte. */
size_t qlm_utf8_valid_prefix(const char *s, size_t n);

#endif
