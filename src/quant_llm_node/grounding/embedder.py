"""Sentence embedder on ONNX Runtime: WordPiece -> BERT -> masked mean -> L2."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort

from .tokenizer import WordPieceTokenizer

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"


def _provider_name(entry) -> str:
    return entry[0] if isinstance(entry, (tuple, list)) else str(entry)


class Embedder:
    """One ONNX Runtime session; ``providers`` holds what ACTUALLY runs.

    ``vocab_path`` defaults to ``vocab.txt`` beside the model (as the build
    recipe lays it out). Requested providers that are not available, or that
    the session silently dropped, are listed in ``fallbacks`` and logged.
    """

    def __init__(self, model_path: str | Path, providers: Sequence | None = None,
                 intra_op_threads: int = 1, vocab_path: str | Path | None = None,
                 max_length: int = 128):
        model_path = Path(model_path)
        vocab_path = Path(vocab_path) if vocab_path else model_path.parent / "vocab.txt"
        self.model_path = model_path
        self.tokenizer = WordPieceTokenizer.from_file(vocab_path, max_length=max_length)
        self.requested_providers = [_provider_name(p) for p in (providers or [CPU])]
        available = set(ort.get_available_providers())
        usable = [p for p in (providers or [CPU]) if _provider_name(p) in available]
        if not usable:
            usable = [CPU]
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(intra_op_threads)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(model_path), options, providers=usable)
        self.providers = list(self.session.get_providers())
        self.fallbacks = [p for p in self.requested_providers if p not in self.providers]
        if self.fallbacks:
            log.warning("embedder: requested providers %s not in use; running on %s",
                        self.fallbacks, self.providers)
        self._inputs = {i.name for i in self.session.get_inputs()}
        for required in ("input_ids", "attention_mask"):
            if required not in self._inputs:
                raise ValueError(f"{model_path}: model has no input {required!r}")
        states = [o for o in self.session.get_outputs() if len(o.shape) == 3]
        if not states:
            raise ValueError(f"{model_path}: no token-state output (rank 3)")
        self._output = states[0].name
        self.dim = int(states[0].shape[-1]) if isinstance(states[0].shape[-1], int) else None

    def _feed(self, text: str) -> tuple[dict, np.ndarray]:
        enc = self.tokenizer.encode(text)
        feed = {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(enc.input_ids)
        return feed, enc.attention_mask

    def embed(self, text: str) -> np.ndarray:
        """L2-normalized float32 vector of one text (no padding)."""
        feed, mask = self._feed(text)
        states = self.session.run([self._output], feed)[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (states * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        vec = pooled[0].astype(np.float32)
        norm = float(np.linalg.norm(vec))
        return vec / norm if norm > 0 else vec

    def embed_many(self, texts: Sequence[str]) -> np.ndarray:
        """Stack of ``embed`` over texts, shape (len(texts), dim)."""
        return np.stack([self.embed(t) for t in texts]) if texts else np.zeros((0, self.dim or 0))

    def info(self) -> dict:
        """What the node reports: model file, requested and actual providers."""
        return {"model": str(self.model_path), "requested_providers": self.requested_providers,
                "providers": self.providers, "fallbacks": self.fallbacks}
