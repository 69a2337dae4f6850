#!/usr/bin/env python3
"""Apply the project's patches to an extracted llama-cpp-python sdist (its vendored llama.cpp).

Usage: patch_llama_cpp.py SDIST_DIR [--check]

One patch, for exact jump-forward on CPU: llamafile's sgemm (tinyBLAS) takes every matmul of 2
or more rows, ggml's own vec_dot path only single rows, and the two round differently, so a
2-row ``llama_decode`` gave other logits than the same two tokens decoded one by one. With
sgemm from 4 rows on, a batch of 2 or 3 rows goes through the same kernels as one row and its
logits are bitwise those of single steps (measured by ``decode_bench --rows``); prompt
prefill (hundreds of rows) keeps sgemm and its speed. The engine checks batch invariance at
load (``LlamaEngine.exact_rows``) and batches grammar-forced tokens only as far as it holds.

Each patch replaces one exact text once; a source that does not hold it fails loudly, so a new
llama-cpp-python version cannot be built with a patch that no longer fits. --check: report
whether the tree is patched (exit 0) or not (exit 1), change nothing.
"""
from __future__ import annotations

import sys
from pathlib import Path

SGEMM = "vendor/llama.cpp/ggml/src/ggml-cpu/llamafile/sgemm.cpp"
PATCHES = (
    (SGEMM,
     "    // only enable sgemm for prompt processing\n#if !defined(__MMA__)\n    if (n < 2)\n",
     "    // only enable sgemm for prompt processing (quant_llm_node: from 4 rows, so that 2-3 row\n"
     "    // decode batches round exactly like single rows)\n#if !defined(__MMA__)\n    if (n < 4)\n"),
)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    root, check = Path(argv[0]), "--check" in argv[1:]
    patched = True
    for rel, old, new in PATCHES:
        path = root / rel
        text = path.read_text()
        if text.count(new) == 1:
            continue
        patched = False
        if check:
            continue
        if text.count(old) != 1:
            print(f"patch_llama_cpp: {rel}: the text to patch is not there once; not patched", file=sys.stderr)
            return 2
        path.write_text(text.replace(old, new))
        print(f"patch_llama_cpp: patched {rel}")
    return 0 if (patched or not check) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
