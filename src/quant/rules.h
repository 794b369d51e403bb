/* rules.h — selective and mixed precision: which method, bits and group each tensor gets.
 *
 * A rule is one line:   SELECTOR ACTION [key=value ...]
 *   SELECTOR  "*" (every matrix), or comma-separated conditions that must all hold:
 *               layers=A-B|C...   block index in a range or list (e.g. 0-4, 0-4|10)
 *               component=C|...   attn_q attn_k attn_v attn_o attn_qkv ffn_gate ffn_up ffn_down
 *                                 embd (token_embd) output (the head), or the groups attn, ffn,
 *                                 linear (every attn_* and ffn_*)
 *               name=GLOB         the GGUF tensor name, shell glob (blk.*.ffn_down.weight)
 *   ACTION    a method (absmax, zeropoint, llm-int8, nf4, fp4, gguf, ... : quant/method.h) with its
 *             options, or f32 / f16 (store unquantized; "keep" = f32)
 * Lines starting with # and blank lines are ignored.  The first rule that matches a tensor wins;
 * a matrix no rule matches gets the command's default (its --method for linear weights, f32 for
 * embeddings and head unless --keep-embeddings says otherwise, f32 for anything else).
 * Only 2-D weight matrices are subject to rules; norms and biases always stay f32.
 *
 * Example (seed 003: attention and FFN of the first 5 layers to int8, the rest full precision):
 *   layers=0-4,component=linear  absmax bits=8
 *   *                            f32 */
#ifndef QLM_RULES_H
#define QLM_RULES_H

#include <stdbool.h>

#include "core/error.h"
#include "quant/method.h"

/* What a tensor gets. */
typedef enum qlm_choice_kind { QLM_CHOICE_F32, QLM_CHOICE_F16, QLM_CHOICE_METHOD } qlm_choice_kind;

typedef struct qlm_choice {
  qlm_choice_kind kind;
  const qlm_quant_method *method; /* QLM_CHOICE_METHOD */
  qlm_quant_opts opts;            /* with the method's defaults filled in */
} qlm_choice;

typedef struct qlm_rules qlm_rules;

qlm_rules *qlm_rules_new(qlm_error *err);
void qlm_rules_free(qlm_rules *r);
/* Add one rule line; `where` names it in errors ("rules.txt:3", "--rule"). Blank/comment: no-op. */
int qlm_rules_add(qlm_rules *r, const char *line, const char *where, qlm_error *err);
/* Add every line of a file. */
int qlm_rules_add_file(qlm_rules *r, const char *path, qlm_error *err);
int qlm_rules_count(const qlm_rules *r);
/* The rules as text, one per line (for the model file's metadata); owned by r. */
const char *qlm_rules_text(const qlm_rules *r);

/* The choice of the first rule matching tensor `name`; false if none matches. */
bool qlm_rules_match(const qlm_rules *r, const char *name, qlm_choice *out);

/* Parse "ACTION [key=value ...]" words (argv style) into a choice. */
int qlm_choice_parse(int argc, char *const *argv, const char *where, qlm_choice *out, qlm_error *err);

/* The component of a GGUF tensor name ("attn_q", "embd", ... ; NULL if none) and its block index
 * (-1 if not in a block). */
const char *qlm_tensor_component(const char *name, int *layer);

#endif
