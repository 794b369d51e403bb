/* fuzz_tokenize.c — arbitrary bytes through the SPM tokenizer of stories260K (its GGUF vocab:
 * 512 tokens with <0xXX> byte fallback) and the byte-level BPE tokenizer of SmolLM2
 * (tokenizers/smollm2-135m/tokenizer.json).  The first byte picks the tokenizer and flags.
 *
 * Round trip: encode must accept exactly the valid UTF-8 inputs, and for those without
 * special-token parsing decode(encode(x)) == x must hold:
 *   byte-level BPE: when every byte has its byte-level token (the pre-tokenizer only splits;
 *     SmolLM2's vocab lacks a few control bytes, e.g. 0x04 -> U+0104, which encode drops, as HF's
 *     BPE does without an unk token).
 *   SPM with byte fallback: for texts without U+2581 ("▁" is SPM's space, so it decodes to a
 *     space) — encode prepends a space, and decode drops it after BOS, so BOS is added.
 * Texts with NUL bytes are encoded but not compared (qlm_detokenize returns a C string). */
#include "fuzz_common.h"
#include "tokenizer/tok_internal.h"
#include "tokenizer/tokenizer.h"
#include "formats/source.h"

typedef struct fuzz_tok {
  qlm_source *src;  /* stories260K.gguf (owns the SPM vocab) */
  qlm_vocab bpe_vocab;
  qlm_tokenizer *spm, *bpe;
  unsigned char bpe_has_byte[256]; /* the byte-level vocab has the byte's token (SmolLM2 lacks a few) */
} fuzz_tok;

static fuzz_tok T;

static void tok_free(void) {
  qlm_tokenizer_free(T.spm);
  qlm_tokenizer_free(T.bpe);
  qlm_vocab_free(&T.bpe_vocab);
  qlm_source_close(T.src);
}

static void tok_init(void) {
  char path[512];
  qlm_error err = {0};
  if (qlm_gguf_open(fuzz_shared("models/stories260K/stories260K.gguf", path, sizeof path), &T.src, &err) ||
      qlm_tokenizer_new(&T.src->vocab, &T.spm, &err)) {
    fprintf(stderr, "fuzz_tokenize: %s\n", err.msg);
    abort();
  }
  qlm_vocab_init(&T.bpe_vocab);
  if (qlm_vocab_from_tokenizer_json(fuzz_shared("tokenizers/smollm2-135m/tokenizer.json", path, sizeof path),
                                    &T.bpe_vocab, &err) ||
      qlm_tokenizer_new(&T.bpe_vocab, &T.bpe, &err)) {
    fprintf(stderr, "fuzz_tokenize: %s\n", err.msg);
    abort();
  }
  for (int b = 0; b < 256; b++) { /* a byte without a token is dropped by encode, as HF does */
    const char *u = tok_byte_to_unicode((unsigned char)b);
    for (int i = 0; i < T.bpe_vocab.n_tokens && !T.bpe_has_byte[b]; i++)
      T.bpe_has_byte[b] = strcmp(T.bpe_vocab.tokens[i], u) == 0;
  }
  atexit(tok_free);
}

static int bpe_all_bytes_have_tokens(const uint8_t *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!T.bpe_has_byte[s[i]]) return 0;
  return 1;
}

/* Is s[0..n) valid UTF-8 (RFC 3629: no overlongs, surrogates, or code points past U+10FFFF)? */
static int valid_utf8(const uint8_t *s, size_t n) {
  for (size_t i = 0; i < n;) {
    uint8_t c = s[i];
    size_t len;
    uint32_t cp;
    if (c < 0x80) { i++; continue; }
    if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
    else return 0;
    if (i + len > n) return 0;
    for (size_t k = 1; k < len; k++) {
      if ((s[i + k] & 0xC0) != 0x80) return 0;
      cp = cp << 6 | (s[i + k] & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return 0;
    i += len;
  }
  return 1;
}

static int has_sep(const uint8_t *s, size_t n) { /* U+2581 = E2 96 81 */
  for (size_t i = 0; i + 2 < n; i++)
    if (s[i] == 0xE2 && s[i + 1] == 0x96 && s[i + 2] == 0x81) return 1;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!T.spm) tok_init();
  if (size < 1 || size > 4096) return 0; /* longer texts only slow the fuzzer down */
  int spm = data[0] & 1, parse_special = (data[0] >> 1) & 1;
  const uint8_t *text = data + 1;
  size_t n = size - 1;
  const qlm_tokenizer *tok = spm ? T.spm : T.bpe;
  qlm_error err = {0};
  int32_t *ids = NULL;
  int n_ids = 0;
  int add_special = spm; /* SPM: BOS makes decode drop the prefix space */
  int rc = qlm_tokenize(tok, (const char *)text, n, add_special, parse_special, &ids, &n_ids, &err);
  int valid = valid_utf8(text, n);
  if ((rc == 0) != valid) {
    fprintf(stderr, "fuzz_tokenize: tokenize returned %d on %s UTF-8 (%s)\n", rc, valid ? "valid" : "invalid", err.msg);
    abort();
  }
  if (rc) return 0;
  int n_vocab = qlm_tokenizer_vocab(tok)->n_tokens;
  for (int i = 0; i < n_ids; i++)
    if (ids[i] < 0 || ids[i] >= n_vocab) {
      fprintf(stderr, "fuzz_tokenize: id %d out of vocab (%d)\n", ids[i], n_vocab);
      abort();
    }
  char *out = NULL;
  if (qlm_detokenize(tok, ids, n_ids, 0, &out, &err) != 0) {
    fprintf(stderr, "fuzz_tokenize: detokenize failed: %s\n", err.msg);
    abort();
  }
  int check = !parse_special && !memchr(text, 0, n) && !(spm && has_sep(text, n)) &&
              (spm || bpe_all_bytes_have_tokens(text, n));
  if (check && (strlen(out) != n || memcmp(out, text, n) != 0)) {
    fprintf(stderr, "fuzz_tokenize: %s round trip differs: %zu bytes in, %zu out\n", spm ? "SPM" : "BPE", n,
            strlen(out));
    abort();
  }
  free(out);
  free(ids);
  return 0;
}
