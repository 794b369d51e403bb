#!/usr/bin/env python3
"""Write tests/data/mmlu/categories.tsv: lm-evaluation-harness's MMLU subject -> category table.

The table is read from the installed lm-eval package (lm_eval/tasks/mmlu/_generate_configs.py,
SUBJECTS), so test_mmlu checks qlm's table against lm-eval's own, not against a copy typed by hand.
Run in the reference venv:  python tools/gen_mmlu_categories.py   (lm-eval 0.4.13 was used)
"""
import ast
import importlib.util
import pathlib
import re

spec = importlib.util.find_spec("lm_eval")
src = pathlib.Path(spec.origin).parent / "tasks" / "mmlu" / "_generate_configs.py"
text = src.read_text()
subjects = ast.literal_eval(re.search(r"SUBJECTS\s*=\s*(\{.*?\n\})", text, re.S).group(1))
import lm_eval  # noqa: E402  (for the version line)
out = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data" / "mmlu" / "categories.tsv"
with open(out, "w") as f:
    f.write(f"# lm-eval {getattr(lm_eval, '__version__', '?')} tasks/mmlu/_generate_configs.py SUBJECTS\n")
    for subject, category in sorted(subjects.items()):
        f.write(f"{subject}\t{category}\n")
print(f"{len(subjects)} subjects -> {out}")
