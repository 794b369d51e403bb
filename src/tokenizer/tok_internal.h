/* tok_internal.h — private pieces shared by the tokenizer's .c files (not a public interface).
 *
 * tokenizer.c: hash tables, the qlm_tokenizer object, special-token splitting, decoding.
 * spm.c:       SentencePiece-style merging by score.
 * bpe.c:       byte-level BPE: byte<->unicode map, merge ranks, regex pre-tokenizer (PCRE2). */
#ifndef QLM_TOK_INTERNAL_H
#define QLM_TOK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "core/error.h"
#include "tokenizer/vocab.h"

#define TOK_MAX_REGEX 8 /* most regexes in one pre-tokenizer sequence */

/* Open-addressing hash from token text to id (keys are the vocab's own strings). */
typedef struct tok_strmap {
  uint32_t mask;   /* capacity - 1 (capacity is a power of two) */
  int32_t *slots;  /* [capacity] token id, or -1 for empty */
} tok_strmap;

/* Open-addressing hash from a pair of token ids to a BPE merge. */
typedef struct tok_pairmap {
  uint32_t mask;
  uint64_t *keys;  /* [capacity] (left << 32 | right) + 1; 0 = empty */
  int32_t *rank;   /* [capacity] merge rank (index in vocab->merges) */
  int32_t *result; /* [capacity] id of the merged token */
} tok_pairmap;

/* Special tokens that are matched in raw text, grouped by their first byte. */
typedef struct tok_special {
  int32_t *ids;       /* [n] ids sorted by first byte, then by length descending */
  int n;
  int first[257];     /* ids[first[b] .. first[b+1]) start with byte b */
} tok_special;

struct qlm_tokenizer {
  const qlm_vocab *v;
  tok_strmap text2id;   /* every token text -> id (the last id wins for duplicates, as llama.cpp) */
  tok_special special;
  int32_t byte_tok[256];/* SPM: id of <0xXX>; BPE: id of the mapped char of byte XX; -1 if absent */
  /* BPE only */
  tok_pairmap merges;
  int n_regex;
  pcre2_code *regex[TOK_MAX_REGEX]; /* applied in order, each splitting the pieces of the previous */
  int ignore_merges;    /* llama3: a whole pre-token that is in the vocab is emitted as is */
};

/* Growable id list. */
typedef struct tok_ids {
  int32_t *v;
  int n, cap;
} tok_ids;
int tok_ids_push(tok_ids *o, int32_t id, qlm_error *err);

/* A symbol in the merge loop: a span of the text being merged, in a doubly linked list. */
typedef struct tok_sym {
  int off, n;       /* span [off, off+n) of the word; n == 0 once merged away */
  int prev, next;   /* neighbour indices or -1 */
  int32_t id;       /* BPE: current token id (or -1) */
} tok_sym;

/* A candidate merge of two adjacent symbols; smaller key first, ties -> leftmost. */
typedef struct tok_bigram {
  double key;       /* SPM: -score; BPE: rank */
  int left, right;  /* symbol indices */
  int size;         /* left.n + right.n when queued; stale if that changed */
  int32_t result;   /* id of the merged token */
} tok_bigram;

typedef struct tok_heap {
  tok_bigram *a;
  int n, cap;
} tok_heap;
int tok_heap_push(tok_heap *h, tok_bigram b, qlm_error *err);
tok_bigram tok_heap_pop(tok_heap *h);

/* Scratch buffers reused across the pieces of one qlm_tokenize call. */
typedef struct tok_session {
  tok_sym *syms; size_t syms_cap;
  tok_heap heap;
  char *buf; size_t buf_cap;          /* SPM: escaped text; BPE: mapped word */
  size_t *spans; size_t spans_cap;    /* pre-token (off, len) pairs */
  size_t *spans2; size_t spans2_cap;
  pcre2_match_data *md;
} tok_session;
void tok_session_free(tok_session *s);
int tok_reserve(void **p, size_t *cap, size_t need, size_t elem, qlm_error *err);

int tok_strmap_build(tok_strmap *m, const qlm_vocab *v, qlm_error *err); /* m->slots: free() */
int32_t tok_strmap_find(const tok_strmap *m, const qlm_vocab *v, const char *s, size_t n);
int tok_attr(const qlm_vocab *v, int32_t id);
/* Byte length of the UTF-8 sequence starting with byte c (1 for invalid lead bytes). */
static inline int tok_utf8_len(unsigned char c) {
  return c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
}

/* spm.c */
int tok_spm_encode(const struct qlm_tokenizer *tok, tok_session *s, const char *text, size_t len, int add_prefix,
                   tok_ids *out, qlm_error *err);

/* bpe.c */
int tok_bpe_init(struct qlm_tokenizer *tok, qlm_error *err);
void tok_bpe_free(struct qlm_tokenizer *tok);
int tok_bpe_encode(const struct qlm_tokenizer *tok, tok_session *s, const char *text, size_t len, tok_ids *out,
                   qlm_error *err);
/* GPT-2 byte-level map: byte -> UTF-8 of its unicode stand-in (1..2 bytes, NUL-terminated). */
const char *tok_byte_to_unicode(unsigned char b);
/* Inverse: code point -> byte, or -1 when the code point is not a stand-in. */
int tok_unicode_to_byte(uint32_t cp);

/* Pre-tokenizer table (bpe.c): regexes per llama.cpp `pre` name; NULL when unknown. */
typedef struct tok_pretok {
  const char *names;   /* '|'-separated names sharing these regexes, e.g. "gpt-2|mpt|default" */
  int ignore_merges;
  const char *regex[TOK_MAX_REGEX]; /* NULL-terminated */
} tok_pretok;
const tok_pretok *tok_pretok_find(const char *name);
/* The entry whose regex sequence equals `regex` (n of them), or NULL; its name is the
 * first of `names` (up to '|'). */
const tok_pretok *tok_pretok_match(const char *const *regex, int n);

/* The regex HF's ByteLevel pre-tokenizer applies when use_regex is true (GPT-2's). */
const char *tok_regex_bytelevel(void);

#endif
