"""Memory-bandwidth roofline for decoding: every generated token reads all weights once.

max decode tok/s = bandwidth / bytes read per token; efficiency = achieved / max.

The host probe must really bound what llama.cpp reaches, or every point lands "above the
roofline". A decode step streams the weights with every engine thread at once, through SIMD
loads, so the probe does the same: one private buffer per thread (pages touched first, so they
are real memory, not the shared zero page), each thread streaming through its own with glibc's
vectorised ``memchr`` (a read of every byte at close to peak rate; ctypes drops the GIL, so the
threads run in parallel), best of N, at the engine's thread count. A numpy reduction, the
previous probe, reads at a fraction of that (a pairwise float sum is compute-bound), so
llama.cpp beat it by 1.2-2x.

An efficiency above 1 means the bandwidth figure is wrong, not that decoding beat the memory:
``efficiency`` clamps it to 1 and ``exceeds_roofline`` says so, for callers to flag.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import threading
import time

import numpy as np

_PROBE_BYTES_PER_THREAD = 128 * 2**20   # well above any last-level cache share
_PROBE_MIN_BYTES = 256 * 2**20
_PROBE_MAX_BYTES = 1024 * 2**20
_PROBE_REPEATS = 5


def roofline_tps(bytes_per_tok: int, bandwidth_gbps: float) -> float:
    return bandwidth_gbps * 1e9 / bytes_per_tok if bytes_per_tok > 0 else float("nan")


def raw_efficiency(achieved_tps: float, bytes_per_tok: int, bandwidth_gbps: float) -> float:
    """Achieved decode tok/s x bytes per token / bandwidth, unclamped."""
    return achieved_tps * bytes_per_tok / (bandwidth_gbps * 1e9) if bandwidth_gbps > 0 else float("nan")


def efficiency(achieved_tps: float, bytes_per_tok: int, bandwidth_gbps: float) -> float:
    """Share of the roofline reached, at most 1 (see ``exceeds_roofline``); nan when unknown."""
    e = raw_efficiency(achieved_tps, bytes_per_tok, bandwidth_gbps)
    return min(e, 1.0) if not math.isnan(e) else e


def exceeds_roofline(achieved_tps: float, bytes_per_tok: int, bandwidth_gbps: float) -> bool:
    """Whether the achieved rate reads more than ``bandwidth_gbps``: the figure is too low."""
    return raw_efficiency(achieved_tps, bytes_per_tok, bandwidth_gbps) > 1.0


def _libc_memchr():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.memchr
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_void_p
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    return fn


def _reader():
    """A function that reads every byte of a uint8 array of ones (no byte is 0)."""
    memchr = _libc_memchr()
    if memchr is not None:
        def read(buf: np.ndarray) -> None:
            if memchr(buf.ctypes.data, 0, buf.nbytes) is not None:
                raise RuntimeError("bandwidth probe buffer corrupted")
        return read, "memchr"
    return (lambda buf: buf.view(np.float32).max()), "numpy max"


def probe_threads(threads: int | None = None) -> int:
    """The engine's thread count: ``threads`` when set (> 0), else the number of cores."""
    return threads if threads and threads > 0 else (os.cpu_count() or 1)


def measure_read_bandwidth_gbps(threads: int | None = None, nbytes: int | None = None,
                                repeats: int = _PROBE_REPEATS, details: dict | None = None) -> float:
    """Best-of-N streaming read rate (GB/s) with ``threads`` threads (default: all cores, as
    the engine's n_threads=0) each reading its own buffer at once; ``nbytes`` in all (default
    128 MiB a thread, 256 MiB to 1 GiB). ``details`` receives the kernel and sizes."""
    n = probe_threads(threads)
    total = nbytes or min(max(_PROBE_MIN_BYTES, n * _PROBE_BYTES_PER_THREAD), _PROBE_MAX_BYTES)
    per = max(1 << 20, total // n) & ~63
    read, kernel = _reader()
    bufs = [np.ones(per, dtype=np.uint8) for _ in range(n)]   # written: real pages
    for b in bufs:
        read(b)  # fault in / warm TLBs once
    start, end = threading.Barrier(n + 1), threading.Barrier(n + 1)
    errors: list[BaseException] = []

    def worker(buf: np.ndarray) -> None:
        for _ in range(repeats):
            start.wait()
            try:
                read(buf)
            except BaseException as exc:  # surfaced after the run
                errors.append(exc)
            end.wait()

    workers = [threading.Thread(target=worker, args=(b,), daemon=True) for b in bufs]
    for w in workers:
        w.start()
    best = math.inf
    for _ in range(repeats):
        start.wait()
        t0 = time.perf_counter()
        end.wait()
        best = min(best, time.perf_counter() - t0)
    for w in workers:
        w.join()
    if errors:
        raise errors[0]
    gbps = n * per / best / 1e9
    if details is not None:
        details.update(kernel=kernel, threads=n, bytes=n * per, repeats=repeats, gbps=gbps)
    return gbps
