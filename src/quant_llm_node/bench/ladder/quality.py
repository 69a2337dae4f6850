"""Quality of a variant on a fixed text: perplexity, and KL divergence and top-1 agreement of
its next-token distributions against a reference variant.

The text is cut into chunks of ``ctx`` tokens (a BOS first when the model wants one) and,
as llama.cpp's perplexity tool does, only the second half of each chunk is scored, so
every scored token has at least ctx/2 tokens of context. The reference keeps its top
``top_k`` log-probabilities per position and its remaining mass as one "tail" bucket;
KL(reference || variant) is computed over those K+1 outcomes. That is a lower bound of
the full-vocabulary KL, equal to it when the reference tail is empty; the mean tail mass
is reported so the bound's tightness is visible. A variant against itself gives exactly 0.
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

QUALITY_CTX = 512          # tokens per chunk (llama.cpp perplexity's default)
KL_TOP_K = 1024            # reference log-probs kept per scored position
KL_QUANTILE = 99.0         # reported upper percentile of per-token KL
TAIL_FLOOR = 1e-12         # smallest tail probability used inside a log


@dataclass
class RefDist:
    """The reference's next-token distributions at the scored positions."""

    ids: np.ndarray        # (n, K) int32 token ids of the reference's top-K
    logp: np.ndarray       # (n, K) float32 their log-probabilities
    argmax: np.ndarray     # (n,) int32 the reference's top-1 token
    digest: str            # of the scored target tokens: both sides must score the same text

    def save(self, path: Path) -> None:
        np.savez(path, ids=self.ids, logp=self.logp, argmax=self.argmax, digest=np.array(self.digest))

    @classmethod
    def load(cls, path: Path) -> "RefDist":
        with np.load(path) as z:
            return cls(z["ids"], z["logp"], z["argmax"], str(z["digest"]))


@dataclass
class QualityResult:
    """Per-variant quality numbers (KL fields are None without a reference)."""

    n_scored: int
    perplexity: float
    nll_mean: float
    kl_mean: float | None = None
    kl_median: float | None = None
    kl_p99: float | None = None
    kl_max: float | None = None
    top1_agreement: float | None = None     # fraction of positions with the same top-1 token
    ref_tail_mass: float | None = None      # mean reference probability outside its top-K
    eval_s: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float32 (max-subtracted)."""
    x = logits.astype(np.float32, copy=True)
    x -= x.max(axis=-1, keepdims=True)
    x -= np.log(np.exp(x).sum(axis=-1, keepdims=True))
    return x


def top_k(logp: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Ids and values of the k largest entries per row (unordered)."""
    k = min(k, logp.shape[-1])
    ids = np.argpartition(logp, -k, axis=-1)[:, -k:].astype(np.int32)
    return ids, np.take_along_axis(logp, ids, axis=-1)


def kl_to_reference(ref_ids: np.ndarray, ref_logp: np.ndarray, logp: np.ndarray) -> np.ndarray:
    """Per-position KL(ref || variant) over the reference's top-K plus one tail bucket."""
    p_log = ref_logp.astype(np.float64)
    q_log = np.take_along_axis(logp, ref_ids, axis=-1).astype(np.float64)
    p = np.exp(p_log)
    kl = (p * (p_log - q_log)).sum(axis=-1)
    p_tail = np.clip(1.0 - p.sum(axis=-1), 0.0, 1.0)
    q_tail = np.clip(1.0 - np.exp(q_log).sum(axis=-1), TAIL_FLOOR, 1.0)
    tail = np.where(p_tail > 0, p_tail * (np.log(np.maximum(p_tail, TAIL_FLOOR)) - np.log(q_tail)), 0.0)
    return np.maximum(kl + tail, 0.0)


def score(chunks: Iterable[tuple[np.ndarray, np.ndarray]], reference: RefDist | None = None,
          keep_top_k: int = 0) -> tuple[QualityResult, RefDist | None]:
    """Score (logits (m, V), targets (m,)) chunks; returns the result and, when
    ``keep_top_k``, this model's own RefDist (to serve as the reference)."""
    t0 = time.perf_counter()
    nll, kl, agree, tail, argmaxes, targets_all, ids_l, logp_l = [], [], [], [], [], [], [], []
    offset = 0
    for logits, targets in chunks:
        logp = log_softmax(logits)
        m = len(targets)
        nll.append(-logp[np.arange(m), targets].astype(np.float64))
        am = logp.argmax(axis=-1).astype(np.int32)
        argmaxes.append(am)
        targets_all.append(np.asarray(targets, dtype=np.int32))
        if reference is not None:
            sl = slice(offset, offset + m)
            kl.append(kl_to_reference(reference.ids[sl], reference.logp[sl], logp))
            agree.append(am == reference.argmax[sl])
            tail.append(1.0 - np.exp(reference.logp[sl].astype(np.float64)).sum(axis=-1))
        if keep_top_k:
            ids, vals = top_k(logp, keep_top_k)
            ids_l.append(ids)
            logp_l.append(vals.astype(np.float32))
        offset += m
    if offset == 0:
        raise ValueError("no scored tokens: the text is too short for one chunk")
    digest = _digest(np.concatenate(targets_all))
    nll_all = np.concatenate(nll)
    result = QualityResult(n_scored=offset, nll_mean=float(nll_all.mean()),
                           perplexity=float(math.exp(nll_all.mean())))
    if reference is not None:
        if reference.digest != digest or len(reference.argmax) != offset:
            raise ValueError("reference and variant scored different tokens (tokenizer mismatch?)")
        kl_all = np.concatenate(kl)
        result.kl_mean = float(kl_all.mean())
        result.kl_median = float(np.median(kl_all))
        result.kl_p99 = float(np.percentile(kl_all, KL_QUANTILE))
        result.kl_max = float(kl_all.max())
        result.top1_agreement = float(np.concatenate(agree).mean())
        result.ref_tail_mass = float(np.clip(np.concatenate(tail), 0, 1).mean())
    own = None
    if keep_top_k:
        own = RefDist(np.concatenate(ids_l), np.concatenate(logp_l), np.concatenate(argmaxes), digest)
    result.eval_s = time.perf_counter() - t0
    return result, own


def _digest(tokens: np.ndarray) -> str:
    return hashlib.sha256(tokens.astype(np.int32).tobytes()).hexdigest()[:16]


def chunk_tokens(tokens: list[int], ctx: int, bos: int | None, max_chunks: int = 0) -> list[list[int]]:
    """Non-overlapping chunks of ``ctx`` tokens, each starting with ``bos`` when given."""
    body = ctx - (1 if bos is not None else 0)
    n = len(tokens) // body
    if max_chunks:
        n = min(n, max_chunks)
    head = [bos] if bos is not None else []
    return [head + tokens[i * body:(i + 1) * body] for i in range(n)]


def calibration_logits(llm, text: str, ctx: int = QUALITY_CTX,
                       max_chunks: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Evaluate ``text`` with a ``llama_cpp.Llama`` loaded with logits_all=True and n_ctx >= ctx;
    yields (logits of the scored positions, the tokens they predict) per chunk."""
    import llama_cpp
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    bos = llm.token_bos() if llama_cpp.llama_vocab_get_add_bos(vocab) else None
    tokens = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
    first = ctx // 2
    for chunk in chunk_tokens(tokens, ctx, bos, max_chunks):
        llm.reset()
        llm.eval(chunk)
        n = len(chunk)
        logits = np.array(llm.scores[first:n - 1], dtype=np.float32)
        yield logits, np.asarray(chunk[first + 1:n], dtype=np.int32)


def load_for_logits(model_path: str | Path, ctx: int = QUALITY_CTX, threads: int = 0,
                    n_gpu_layers: int = 0):
    """A ``llama_cpp.Llama`` that keeps the logits of every evaluated token."""
    import os
    import llama_cpp
    n_threads = threads or os.cpu_count() or 1
    return llama_cpp.Llama(model_path=str(model_path), n_ctx=ctx, n_batch=ctx, n_ubatch=ctx,
                           n_threads=n_threads, n_threads_batch=n_threads,
                           n_gpu_layers=n_gpu_layers, logits_all=True, verbose=False)


def evaluate_model(model_path: str | Path, text: str, reference: RefDist | None = None,
                   keep_top_k: int = 0, ctx: int = QUALITY_CTX, threads: int = 0,
                   n_gpu_layers: int = 0, max_chunks: int = 0) -> tuple[QualityResult, RefDist | None]:
    """Load a model, score ``text`` and free it again."""
    llm = load_for_logits(model_path, ctx, threads, n_gpu_layers)
    try:
        t0 = time.perf_counter()
        result, own = score(calibration_logits(llm, text, ctx, max_chunks), reference, keep_top_k)
        result.eval_s = time.perf_counter() - t0
        return result, own
    finally:
        llm.close()
