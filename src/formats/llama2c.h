/* llama2c.h — llama2.c's tokenizer.bin, readable on its own (qlm_llama2c_open uses it too). */
#ifndef QLM_LLAMA2C_H
#define QLM_LLAMA2C_H

#include "core/error.h"
#include "tokenizer/vocab.h"

/* Read a llama2.c tokenizer.bin (int32 max_token_length, then per token: f32 score, int32 len,
 * len bytes) into `v` as an SPM vocab (ids 0/1/2 = <unk>/<s>/</s>, "<0xXX>" byte tokens).
 * n_vocab > 0: the file must hold exactly that many tokens (the model's vocab size);
 * n_vocab <= 0: read tokens until the end of the file. `v` must be initialised. */
int qlm_llama2c_read_tokenizer(const char *path, int n_vocab, qlm_vocab *v, qlm_error *err);

#endif
