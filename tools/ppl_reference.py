#!/usr/bin/env python3
"""ppl_reference.py — reference perplexities for `qlm ppl`, computed by the real implementations.

For each protocol this script runs the reference tool's own procedure on a Hugging Face
transformers model (PyTorch, float32) and prints one JSON record per run:

  hf-window  the code of HF's guide "Perplexity of fixed-length models" (docs/source/en/perplexity.md):
             "\\n\\n".join(rows), windows begin_loc = 0, stride, ...; labels -100 for the context; the
             model's own loss.  Two numbers: `ppl` = exp(sum NLL / tokens scored) (what qlm reports)
             and `ppl_guide` = the guide's literal aggregation exp(sum loss*num_loss_tokens /
             sum num_loss_tokens), whose num_loss_tokens = valid labels - 1 undercounts every window
             after the first by one token (a quirk of the guide; the two differ by ~1e-5 relative).
  per-line   the same loop on each non-empty row alone; NLL pooled over rows.
  llamacpp   llama.cpp tools/perplexity/perplexity.cpp's chunking re-done on the HF model (chunks of
             n_ctx, first token -> BOS when the vocab adds BOS, positions n_ctx/2 .. n_ctx-2 scored).
             The binary itself (llama-perplexity) is the other reference; see --help of this script.
  lm-eval    lm-evaluation-harness (pip lm-eval) HFLM.loglikelihood_rolling on the detokenized
             articles (its own wikitext_detokenizer and process_results), the article split of
             EleutherAI/wikitext_document_level (re-done here: that dataset needs the hub).

Rows are those of the HF `wikitext` loader: each line of the file with its "\\n", whitespace-only
lines as "".  Models:
  stories   ../shared/models/stories260K-hf (no tokenizer files: token ids come from
            `qlm tokenize --no-special --ids` on the GGUF's vocab, BOS added where the vocab adds it,
            as HF's LlamaTokenizer would)
  smollm2   the Q4_1 GGUF of SmolLM2-135M-Instruct loaded with from_pretrained(gguf_file=...)
            (transformers dequantizes to float32) and ../shared/tokenizers/smollm2-135m/tokenizer.json

usage: ppl_reference.py --model stories|smollm2 --protocol P [--data FILE] [--window N]
                        [--stride N] [--max-windows N] [--max-docs N]
venv: /root/.cache/qlm/venv-ref (torch, transformers, gguf, lm-eval).
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("QLM_SHARED", os.path.join(ROOT, "..", "shared"))
QLM = os.environ.get("QLM_BIN", os.path.join(ROOT, "build", "qlm"))
SMOL_GGUF = os.environ.get("SMOLLM2_GGUF", "/root/.cache/qlm/models/SmolLM2-135M-Instruct.Q4_1.gguf")
STORIES_GGUF = os.path.join(SHARED, "models/stories260K/stories260K.gguf")


# ---- models and tokenizers ----

class QlmIds:
    """Token ids of the stories260K GGUF vocab via `qlm tokenize` (no HF tokenizer exists)."""
    bos, eos, add_bos = 1, 2, True

    def encode(self, text, add_special=True):
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt", delete=False) as f:
            f.write(text)
            path = f.name
        try:
            out = subprocess.run([QLM, "tokenize", "-m", STORIES_GGUF, "--no-special", "--ids", "-f", path],
                                 check=True, capture_output=True, text=True).stdout
        finally:
            os.unlink(path)
        ids = [int(x) for x in out.split()]
        return ([self.bos] if add_special and self.add_bos else []) + ids


class HfIds:
    def __init__(self, tok):
        self.tok = tok
        self.bos, self.eos = tok.bos_token_id, tok.eos_token_id

    def encode(self, text, add_special=True):
        return self.tok.encode(text, add_special_tokens=add_special)


def load(name):
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    if name == "stories":
        model = AutoModelForCausalLM.from_pretrained(os.path.join(SHARED, "models/stories260K-hf"),
                                                     torch_dtype=torch.float32)
        return model.eval(), QlmIds(), None
    if name == "smollm2":
        model = AutoModelForCausalLM.from_pretrained(os.path.dirname(SMOL_GGUF), gguf_file=os.path.basename(SMOL_GGUF),
                                                     torch_dtype=torch.float32)
        # bos/eos as SmolLM2-135M-Instruct's tokenizer_config.json names them (ids 1 and 2, as config.json)
        tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(SHARED, "tokenizers/smollm2-135m/tokenizer.json"),
                                      bos_token="<|im_start|>", eos_token="<|im_end|>")
        return model.eval(), HfIds(tok), tok
    raise SystemExit(f"unknown model {name}")


# ---- text ----

def hf_rows(text):
    """HF datasets' wikitext loader: one row per line with its newline; blank lines -> ""."""
    assert "\r" not in text  # the loader reads with universal newlines; wiki.test.raw has none
    rows = [ln + "\n" for ln in text.split("\n")]
    rows[-1] = rows[-1][:-1]
    if not rows[-1]:
        rows.pop()
    return [r if r.strip() else "" for r in rows]


def wikitext_pages(text):
    """EleutherAI/wikitext_document_level's _generate_examples (one page per top-level heading)."""
    ret, pages = [], []
    for line in text.split("\n"):
        rline = line.replace("= = =", "===").replace("= =", "==").strip()
        if rline.startswith("= ") and rline.strip().endswith(" ="):
            page = "\n".join(ret)
            if page.strip():
                pages.append(page)
            ret = []
        ret.append(line)
    pages.append("\n".join(ret))
    return pages


# ---- scoring ----

@torch.no_grad()
def token_nll(model, ids):
    """-log p(ids[i] | ids[:i]) for i >= 1, float64, and the float32 logits' HF loss."""
    x = torch.tensor([ids])
    logits = model(x).logits[0].double()
    lp = torch.log_softmax(logits[:-1], dim=-1)
    return -lp.gather(1, x[0, 1:, None]).squeeze(1)


@torch.no_grad()
def hf_guide(model, ids, max_length, stride, st, max_windows):
    """The guide's loop, literally, plus the exact per-token sums."""
    seq_len = len(ids)
    prev_end = 0
    for begin in range(0, seq_len, stride):
        if max_windows and st["windows"] >= max_windows:
            return
        end = min(begin + max_length, seq_len)
        trg_len = end - prev_end
        inp = torch.tensor([ids[begin:end]])
        tgt = inp.clone()
        tgt[:, :-trg_len] = -100
        out = model(inp, labels=tgt)
        valid = int((tgt != -100).sum())
        n_loss = valid - 1
        st["guide_sum"] += float(out.loss) * n_loss
        st["guide_n"] += n_loss
        lp = torch.log_softmax(out.logits[0].double()[:-1], dim=-1)
        lab = tgt[0, 1:]
        m = lab != -100
        nll = -lp[m].gather(1, lab[m][:, None]).squeeze(1)
        st["nll"] += float(nll.sum())
        st["n"] += int(m.sum())
        st["windows"] += 1
        prev_end = end
        if end == seq_len:
            break


def run_hf_window(model, tok, text, a, st):
    ids = tok.encode("\n\n".join(hf_rows(text)), True)
    st["tokens"] = len(ids)
    hf_guide(model, ids, a.window or 1024, a.stride or (a.window or 1024) // 2, st, a.max_windows)


def run_per_line(model, tok, text, a, st):
    for row in hf_rows(text):
        if not row:
            continue
        ids = tok.encode(row, True)
        if len(ids) >= 2:
            hf_guide(model, ids, a.window or 1024, a.stride or (a.window or 1024) // 2, st, a.max_windows)
        if a.max_windows and st["windows"] >= a.max_windows:
            break


@torch.no_grad()
def run_llamacpp(model, tok, text, a, st):
    ids = tok.encode(text, True)
    n_ctx = a.window or 512
    n_chunk = len(ids) // n_ctx
    if a.max_windows:
        n_chunk = min(n_chunk, a.max_windows)
    first = n_ctx // 2
    add_bos = ids[:1] == [tok.bos] and tok.bos is not None
    for c in range(n_chunk):
        chunk = ids[c * n_ctx:(c + 1) * n_ctx]
        if add_bos:
            chunk = [tok.bos] + chunk[1:]
        nll = token_nll(model, chunk)  # nll[i] = -log p(chunk[i+1] | chunk[:i+1])
        part = nll[first:n_ctx - 1]
        st["nll"] += float(part.sum())
        st["nll2"] = st.get("nll2", 0.0) + float((part * part).sum())
        st["n"] += part.numel()
        st["windows"] += 1


def run_lm_eval(model, tok, hf_tok, text, a, st):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks.wikitext import preprocess_wikitext as pw
    docs = [{"page": p} for p in wikitext_pages(text)]
    if a.max_docs:
        docs = docs[:a.max_docs]
    kw = {"max_length": a.window} if a.window else {}
    if hf_tok is None:  # stories: qlm's ids stand in for the tokenizer (HFLM needs some tokenizer object)
        from transformers import PreTrainedTokenizerFast
        hf_tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(SHARED, "tokenizers/smollm2-135m/tokenizer.json"))
        lm = HFLM(pretrained=model, tokenizer=hf_tok, batch_size=1, prefix_token_id=tok.bos, **kw)
        # HFLM.tok_encode(string) with add_special_tokens=None uses the tokenizer's default (adds BOS)
        lm.tok_encode = lambda s, add_special_tokens=None, **k: tok.encode(
            s, True if add_special_tokens is None else add_special_tokens)
    else:
        lm = HFLM(pretrained=model, tokenizer=hf_tok, batch_size=1, **kw)
    reqs = [Instance(request_type="loglikelihood_rolling", doc=d, arguments=(pw.wikitext_detokenizer(d),), idx=0)
            for d in docs]
    lls = [x[0] if isinstance(x, tuple) else x for x in lm.loglikelihood_rolling(reqs, disable_tqdm=True)]
    res = [pw.process_results(d, [ll]) for d, ll in zip(docs, lls)]
    from lm_eval.api.metrics import bits_per_byte, weighted_perplexity
    st["word_perplexity"] = weighted_perplexity([r["word_perplexity"] for r in res])
    st["byte_perplexity"] = weighted_perplexity([r["byte_perplexity"] for r in res])
    st["bits_per_byte"] = bits_per_byte([r["bits_per_byte"] for r in res])
    st["nll"] = -sum(lls)
    st["n"] = sum(len(lm.tok_encode(r.args[0])) for r in reqs)
    st["docs"] = len(docs)
    st["max_length"] = lm.max_length


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, choices=["stories", "smollm2"])
    ap.add_argument("--protocol", required=True, choices=["hf-window", "per-line", "llamacpp", "lm-eval"])
    ap.add_argument("--data", default=os.path.join(SHARED, "data/wikitext-2-raw/wiki.test.raw"))
    ap.add_argument("--window", type=int, default=0)
    ap.add_argument("--stride", type=int, default=0)
    ap.add_argument("--max-windows", type=int, default=0, help="first N windows (as qlm ppl --chunks N)")
    ap.add_argument("--max-docs", type=int, default=0, help="lm-eval: first N articles")
    a = ap.parse_args()
    text = open(a.data, encoding="utf-8").read()
    model, tok, hf_tok = load(a.model)
    st = {"model": a.model, "protocol": a.protocol, "data": a.data, "nll": 0.0, "n": 0, "windows": 0,
          "guide_sum": 0.0, "guide_n": 0}
    t0 = time.time()
    if a.protocol == "hf-window":
        run_hf_window(model, tok, text, a, st)
    elif a.protocol == "per-line":
        run_per_line(model, tok, text, a, st)
    elif a.protocol == "llamacpp":
        run_llamacpp(model, tok, text, a, st)
    else:
        run_lm_eval(model, tok, hf_tok, text, a, st)
    st["seconds"] = time.time() - t0
    st["ppl"] = math.exp(st["nll"] / st["n"]) if st["n"] else float("nan")
    if st["guide_n"]:
        st["ppl_guide"] = math.exp(st["guide_sum"] / st["guide_n"])
    for k in ("guide_sum", "guide_n"):
        st.pop(k)
    print(json.dumps(st))


if __name__ == "__main__":
    sys.exit(main())
