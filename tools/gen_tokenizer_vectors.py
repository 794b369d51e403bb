#!/usr/bin/env python3
"""Generate reference tokenizations for tests/test_tokenizer_json.c with Hugging Face's
`tokenizers` package (pip install tokenizers) — an independent implementation.

usage: tools/gen_tokenizer_vectors.py TOKENIZER_JSON WIKI_TEST_RAW OUT
       (e.g. ../shared/tokenizers/smollm2-135m/tokenizer.json
             ../shared/data/wikitext-2-raw/wiki.test.raw tests/data/tokenizer/smollm2.vectors)

Output: one JSON array per line, ["text", [ids...]], encoded without special tokens."""
import json
import sys

from tokenizers import Tokenizer

STRINGS = [
    "", " ", "  ", "   ", "\t", "\n", "\n\n", "\n\n\n", "\t\n", " \n ",
    "Hello world", " Hello world", "Hello World", " Hello World!", "Hello, world!",
    "hello  world", "Hello\nworld", "Hello\n\nworld\n",
    "I'm here, you're there, he'll go, we've done, she'd say, it's DON'T",
    "The quick brown fox jumps over the lazy dog.",
    "3.14159 2024-05-01 1,000,000 00042 7",
    "ied 4 ½ months", "x² + y³ = z⁴", "Arabic digits ٣٤٥ and Devanagari ३४", "Ⅻ o'clock",
    "Äpfel über Straße", "naïve café résumé", "нещо на Български", "Ελληνικά γράμματα",
    "日本語のテキスト", "中文测试文本", "한국어 텍스트", "العربية", "עברית",
    "🦙 llama 🦙🦙 emoji 👍🏽 👨‍👩‍👧", " this is 🦙.cpp",
    "def f(x):\n    return x * 2  # comment\n", "int main() { return 0; }",
    "<|im_start|>user\nhi<|im_end|>", "<|endoftext|>", "a<|endoftext|>b",
    "http://example.com/path?q=1&b=2", "email@example.org", "#hashtag @mention $100 50% ^_^",
    "...!!!???", "--- *** ___ ===", "   leading and trailing spaces   ",
    "tab\tseparated\tvalues", "CRLF\r\nline\r\n", "mixed\u00a0nbsp\u2003em space",
    "A" * 40, "ab" * 30, "supercalifragilisticexpialidocious",
    "Zero-width\u200bjoiner\u200d here", "\u0301combining accent",
]


def main():
    tok = Tokenizer.from_file(sys.argv[1])
    with open(sys.argv[2], encoding="utf-8") as f:
        wiki = [next(f) for _ in range(200)]
    with open(sys.argv[3], "w", encoding="utf-8") as out:
        for s in STRINGS + wiki:
            ids = tok.encode(s, add_special_tokens=False).ids
            out.write(json.dumps([s, ids], ensure_ascii=True) + "\n")


if __name__ == "__main__":
    main()
