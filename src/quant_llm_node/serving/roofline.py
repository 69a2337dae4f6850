"""Memory-bandwidth roofline for decoding: every generated token reads all weights once.

max decode tok/s = bandwidth / bytes read per token; efficiency = achieved / max.

The bandwidth figure must really bound what llama.cpp reaches, or points land "above the
roofline" (the old probe, one numpy float64 sum in one thread, read 1.2-2x below llama.cpp).
The probe, ``measure_read_bandwidth_gbps``, streams memory the way a decode step does:

- **threads:** the engine's thread count (default: all cores, as ``n_threads=0``), each
  streaming its own private buffer at the same moment (barriers start and stop every repetition
  together; the time is the slowest thread's);
- **kernels:** glibc's vectorised ``memchr`` through ctypes (a read of every byte; ctypes drops
  the GIL) and numpy's float32 ``max`` (a SIMD reduction; numpy drops the GIL in its loops),
  both pure loads; the faster wins, since either can be the slower one on a given CPU;
- **buffer:** larger than the last-level cache: max(256 MiB, 128 MiB a thread, 2x the LLC read
  from sysfs), at most 1 GiB and a quarter of the available memory; pages written first, so
  they are real memory and not the shared zero page; ``nbytes`` sets it (e.g. a model's size,
  to see how much of it the caches serve);
- **best of N** repetitions per kernel (5 by default): noise from other work only slows a run.

Costs well under a second on a PC (~1-2 GB read per kernel). An efficiency above 1 means the
figure is wrong, not that decoding beat the memory: ``efficiency`` clamps to 1 and
``exceeds_roofline`` says so, for callers to flag. ``bandwidth_bound`` cross-checks a probe
figure against the rate a measured decode implies (tok/s x bytes per token) and takes that as
the bound's floor where the probe is below it.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import threading
import time
from pathlib import Path

import numpy as np

_PROBE_BYTES_PER_THREAD = 128 * 2**20
_PROBE_MIN_BYTES = 256 * 2**20
_PROBE_MAX_BYTES = 1024 * 2**20
_PROBE_LLC_FACTOR = 2          # the buffer is at least this many last-level caches
_PROBE_MEM_SHARE = 4           # and at most 1/4 of the available memory
_PROBE_REPEATS = 5
_CPU_CACHE_DIR = Path("/sys/devices/system/cpu/cpu0/cache")
_SIZE_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30}
ABOVE_ROOFLINE_NOTE = "above roofline: the bandwidth probe underestimates this host"


def roofline_tps(bytes_per_tok: int, bandwidth_gbps: float) -> float:
    return bandwidth_gbps * 1e9 / bytes_per_tok if bytes_per_tok > 0 else float("nan")


def implied_gbps(achieved_tps: float, bytes_per_tok: int) -> float:
    """What a decode rate reads per second (GB/s), every token reading ``bytes_per_tok``."""
    return achieved_tps * bytes_per_tok / 1e9


def raw_efficiency(achieved_tps: float, bytes_per_tok: int, bandwidth_gbps: float) -> float:
    """Achieved decode tok/s x bytes per token / bandwidth, unclamped."""
    return implied_gbps(achieved_tps, bytes_per_tok) / bandwidth_gbps if bandwidth_gbps > 0 else float("nan")


def efficiency(achieved_tps: float, bytes_per_tok: int, bandwidth_gbps: float) -> float:
    """Share of the roofline reached, at most 1 (see ``exceeds_roofline``); nan when unknown."""
    e = raw_efficiency(achieved_tps, bytes_per_tok, bandwidth_gbps)
    return min(e, 1.0) if not math.isnan(e) else e


def exceeds_roofline(achieved_tps: float, bytes_per_tok: int, bandwidth_gbps: float) -> bool:
    """Whether the achieved rate reads more than ``bandwidth_gbps``: the figure is too low."""
    return raw_efficiency(achieved_tps, bytes_per_tok, bandwidth_gbps) > 1.0


def bandwidth_bound(probe_gbps: float, achieved_tps: float = 0.0, bytes_per_tok: int = 0
                    ) -> tuple[float, bool]:
    """The roofline bandwidth: the probe, or, where a measured decode (``achieved_tps`` at
    ``bytes_per_tok``, best the largest model's) reads faster, that rate as its floor.
    Returns (GB/s, whether the floor was used, i.e. the probe underestimates)."""
    floor = implied_gbps(achieved_tps, bytes_per_tok) if achieved_tps and bytes_per_tok else 0.0
    return (floor, True) if floor > probe_gbps else (probe_gbps, False)


def _cache_size(text: str) -> int:
    text = text.strip().upper()
    unit = _SIZE_UNITS.get(text[-1:], 1)
    digits = text[:-1] if text[-1:] in _SIZE_UNITS else text
    return int(digits) * unit if digits.isdigit() else 0


def last_level_cache_bytes(cache_dir: Path = _CPU_CACHE_DIR) -> int:
    """Size of the highest-level data/unified cache cpu0 sees (sysfs), 0 when unknown."""
    best_level, size = 0, 0
    for index in sorted(cache_dir.glob("index*")):
        try:
            if (index / "type").read_text().strip() == "Instruction":
                continue
            level = int((index / "level").read_text())
            nbytes = _cache_size((index / "size").read_text())
        except (OSError, ValueError):
            continue
        if (level, nbytes) > (best_level, size):
            best_level, size = level, nbytes
    return size


def _available_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 2**10
    except (OSError, ValueError, IndexError):
        pass
    return 0


def probe_bytes(threads: int, llc_bytes: int | None = None) -> int:
    """The default buffer size (all threads together): above the last-level cache."""
    llc = last_level_cache_bytes() if llc_bytes is None else llc_bytes
    total = min(max(_PROBE_MIN_BYTES, threads * _PROBE_BYTES_PER_THREAD, _PROBE_LLC_FACTOR * llc),
                _PROBE_MAX_BYTES)
    avail = _available_bytes()
    return min(total, avail // _PROBE_MEM_SHARE) if avail else total


def _libc_memchr():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.memchr
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_void_p
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    return fn


def _readers() -> dict:
    """Kernel name -> a function reading every byte of a uint8 array of ones (no byte is 0)."""
    out = {}
    memchr = _libc_memchr()
    if memchr is not None:
        def read_memchr(buf: np.ndarray) -> None:
            if memchr(buf.ctypes.data, 0, buf.nbytes) is not None:
                raise RuntimeError("bandwidth probe buffer corrupted")
        out["memchr"] = read_memchr
    out["numpy max"] = lambda buf: buf.view(np.float32).max()
    return out


def probe_threads(threads: int | None = None) -> int:
    """The engine's thread count: ``threads`` when set (> 0), else the number of cores."""
    return threads if threads and threads > 0 else (os.cpu_count() or 1)


def _stream(bufs: list[np.ndarray], read, repeats: int) -> float:
    """Best wall time of ``repeats`` rounds, every thread reading its buffer at once. Each
    thread clocks its own read; a round lasts from the first start to the last end (a
    coordinator's clock would miss reads begun before it wakes up)."""
    n = len(bufs)
    start, end = threading.Barrier(n + 1), threading.Barrier(n + 1)
    spans: list[list[tuple[float, float]]] = [[] for _ in range(repeats)]
    errors: list[BaseException] = []

    def worker(buf: np.ndarray) -> None:
        for r in range(repeats):
            start.wait()
            try:
                t0 = time.perf_counter()
                read(buf)
                spans[r].append((t0, time.perf_counter()))
            except BaseException as exc:  # surfaced after the run
                errors.append(exc)
            end.wait()

    workers = [threading.Thread(target=worker, args=(b,), daemon=True) for b in bufs]
    for w in workers:
        w.start()
    for _ in range(repeats):
        start.wait()
        end.wait()
    for w in workers:
        w.join()
    if errors:
        raise errors[0]
    return min(max(e for _, e in sp) - min(s for s, _ in sp) for sp in spans)


def measure_read_bandwidth_gbps(threads: int | None = None, nbytes: int | None = None,
                                repeats: int = _PROBE_REPEATS, details: dict | None = None) -> float:
    """Best-of-N streaming read rate (GB/s) with ``threads`` threads (default: all cores, as
    the engine's n_threads=0), each reading its own buffer at once; ``nbytes`` in all (default
    ``probe_bytes``: above the last-level cache). The method is in the module docstring.
    ``details`` receives the winning kernel, every kernel's rate, the sizes and the load."""
    n = probe_threads(threads)
    llc = last_level_cache_bytes()
    total = nbytes or probe_bytes(n, llc)
    per = max(1 << 20, total // n) & ~63
    bufs = [np.ones(per, dtype=np.uint8) for _ in range(n)]   # written: real pages
    rates = {}
    for name, read in _readers().items():
        for b in bufs:
            read(b)  # warm TLBs and the code once
        rates[name] = n * per / _stream(bufs, read, max(1, repeats)) / 1e9
    kernel = max(rates, key=rates.get)
    gbps = rates[kernel]
    if details is not None:
        details.update(kernel=kernel, kernels_gbps={k: round(v, 2) for k, v in rates.items()},
                       threads=n, bytes=n * per, llc_bytes=llc, repeats=repeats, gbps=gbps,
                       loadavg=[round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None)
    return gbps
