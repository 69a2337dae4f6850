"""scripts/patch_llama_cpp.py: patches an extracted sdist once, reports its state, and refuses a
source that no longer holds the text it patches."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "patch_llama_cpp.py"
SGEMM = "vendor/llama.cpp/ggml/src/ggml-cpu/llamafile/sgemm.cpp"
ORIGINAL = ("bool llamafile_sgemm(...) {\n    // only enable sgemm for prompt processing\n#if !defined(__MMA__)\n"
            "    if (n < 2)\n        return false;\n#endif\n}\n")


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def _tree(tmp_path, text):
    f = tmp_path / SGEMM
    f.parent.mkdir(parents=True)
    f.write_text(text)
    return f


def test_patches_once_and_reports_the_state(tmp_path):
    f = _tree(tmp_path, ORIGINAL)
    assert _run(tmp_path, "--check").returncode == 1 and f.read_text() == ORIGINAL
    assert _run(tmp_path).returncode == 0
    patched = f.read_text()
    assert "if (n < 4)" in patched and "if (n < 2)" not in patched
    assert _run(tmp_path, "--check").returncode == 0
    assert _run(tmp_path).returncode == 0 and f.read_text() == patched  # idempotent


def test_a_source_without_the_text_is_refused(tmp_path):
    f = _tree(tmp_path, ORIGINAL.replace("n < 2", "n < 3"))
    r = _run(tmp_path)
    assert r.returncode == 2 and "not patched" in r.stderr and "n < 3" in f.read_text()
