/* tokenizer.h — text <-> token ids for every vocab kind in vocab.h. */
#ifndef QLM_TOKENIZER_H
#define QLM_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "tokenizer/vocab.h"

typedef struct qlm_tokenizer qlm_tokenizer;

/* Build a tokenizer from a vocab (the vocab must outlive the tokenizer). Fails with
 * QLM_EUNSUPPORTED for an unknown kind or pre-tokenizer name, naming it. */
int qlm_tokenizer_new(const qlm_vocab *vocab, qlm_tokenizer **out, qlm_error *err);
void qlm_tokenizer_free(qlm_tokenizer *tok);

/* Encode `len` bytes of UTF-8 text.
 *   add_special:   add BOS/EOS as the vocab says (add_bos/add_eos)
 *   parse_special: recognise control/user-defined token texts (e.g. "<|im_start|>") in the text
 * Invalid UTF-8 is an error (QLM_EFORMAT, naming the byte offset).
 * *ids is malloc'd (caller frees); *n_ids its length. */
int qlm_tokenize(const qlm_tokenizer *tok, const char *text, size_t len, int add_special, int parse_special,
                 int32_t **ids, int *n_ids, qlm_error *err);

/* Text of one token as it appears in decoded output (SPM: ▁ -> space, <0xXX> -> byte;
 * BPE: unicode -> bytes). Control tokens decode to "" unless render_special.
 * Writes up to cap bytes into buf and returns the full length (like snprintf, no NUL).
 * `prev` is the previous token id or -1: SPM strips the leading space after BOS. */
int qlm_token_to_piece(const qlm_tokenizer *tok, int32_t prev, int32_t id, int render_special, char *buf, int cap);

/* Decode a whole sequence into a malloc'd NUL-terminated string (*out). */
int qlm_detokenize(const qlm_tokenizer *tok, const int32_t *ids, int n_ids, int render_special, char **out,
                   qlm_error *err);

const qlm_vocab *qlm_tokenizer_vocab(const qlm_tokenizer *tok);

/* Fill an (initialised, empty) vocab from a Hugging Face tokenizer.json:
 *   model.type "BPE" with a ByteLevel pre-tokenizer/decoder -> QLM_TOK_BPE; the pre-tokenizer
 *     sequence (Split regexes, Digits, ByteLevel) must equal one qlm knows, whose llama.cpp
 *     name is stored in v->pre (e.g. Digits(individual)+ByteLevel -> "starcoder" regexes,
 *     named "smollm");
 *   model.type "BPE" with byte_fallback / "▁" (Metaspace or Replace+Prepend normalizers)
 *     -> QLM_TOK_SPM with scores = -(rank of the merge that produces the token).
 * added_tokens become CONTROL (special) or USER_DEFINED.  BOS comes from a TemplateProcessing
 * post-processor when there is one.  Errors: QLM_EIO/QLM_ELIMIT reading, QLM_EFORMAT for bad
 * JSON or structure, QLM_EUNSUPPORTED for other model types or pre-tokenizers (naming them).
 * On failure v is left freed (re-initialised). */
int qlm_vocab_from_tokenizer_json(const char *path, qlm_vocab *v, qlm_error *err);

/* Apply a tokenizer_config.json: add_bos_token, add_eos_token, and bos/eos/unk/pad token
 * texts (strings or {"content": ...}) resolved to ids in v.  Unknown token texts are errors. */
int qlm_vocab_apply_tokenizer_config(const char *path, qlm_vocab *v, qlm_error *err);

#endif
