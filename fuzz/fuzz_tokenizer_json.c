/* fuzz_tokenizer_json.c — arbitrary bytes as a tokenizer.json; a vocab the reader accepts must
 * build a tokenizer that can encode and decode a fixed text without faults. */
#include "fuzz_common.h"
#include "tokenizer/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char path[128];
  fuzz_write("tokenizer.json", data, size, path, sizeof path);
  qlm_error err = {0};
  qlm_vocab v;
  qlm_vocab_init(&v);
  if (qlm_vocab_from_tokenizer_json(path, &v, &err) == 0) {
    qlm_tokenizer *tok = NULL;
    if (qlm_tokenizer_new(&v, &tok, &err) == 0) {
      static const char text[] = "Hello world! 123 <|im_start|> caf\xc3\xa9 \xe2\x96\x81x\n\t  end";
      int32_t *ids = NULL;
      int n = 0;
      if (qlm_tokenize(tok, text, sizeof text - 1, 1, 1, &ids, &n, &err) == 0) {
        char *out = NULL;
        if (qlm_detokenize(tok, ids, n, 1, &out, &err) == 0) free(out);
        free(ids);
      }
      /* every token's piece, with and without specials */
      char buf[64];
      for (int i = 0; i < v.n_tokens && i < 4096; i++) {
        qlm_token_to_piece(tok, -1, i, 1, buf, sizeof buf);
        qlm_token_to_piece(tok, v.bos_id, i, 0, buf, sizeof buf);
      }
      qlm_tokenizer_free(tok);
    }
  }
  qlm_vocab_free(&v);
  return 0;
}
