"""Timing a callable properly: device-synchronised, warmed up, median of blocked runs
with a fixed thread count, on ``torch.utils.benchmark``."""

from __future__ import annotations

import contextlib
import timeit
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.utils.benchmark as benchmark

MIN_RUNS = 3


@dataclass(frozen=True)
class Timing:
    """Seconds per call: median and interquartile range over ``runs`` measured blocks
    of ``number_per_run`` calls each, at ``threads`` intra-op threads."""

    median_s: float
    iqr_s: float
    runs: int
    number_per_run: int
    threads: int
    times: tuple[float, ...] = ()  # seconds per call of each run, in the order timed


def sync(device: torch.device | str) -> None:
    """Waits for queued work on ``device`` (a no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_once(fn: Callable[[], object], device: torch.device | str) -> float:
    """Wall seconds of one synchronised call."""
    sync(device)
    start = timeit.default_timer()
    fn()
    sync(device)
    return timeit.default_timer() - start


def time_call(
    fn: Callable[[], object],
    device: torch.device | str = "cpu",
    *,
    threads: int = 1,
    min_run_time: float = 0.5,
    min_runs: int = MIN_RUNS,
    warmup: int = 1,
    estimate_s: float | None = None,
) -> Timing:
    """Times ``fn()``; inputs must be made and placed on the device beforehand.

    Arguments:
        threads: intra-op threads, set for the whole measurement and recorded.
        min_run_time: seconds to spend measuring at least.
        min_runs: measured blocks at least, so the median and IQR mean something.
        warmup: calls before measuring (allocator, caches, CUDA kernels).
        estimate_s: seconds of one call if already known: then that call was the
            warm-up, and no other is made.

    Every call is a measured one, or the one warm-up: a call slow enough that
    ``min_runs`` of them fill ``min_run_time`` is timed exactly ``min_runs`` times, one
    per block; faster calls go to ``Timer.blocked_autorange``, whose clock
    synchronises the accelerator, and any missing blocks are timed directly (not by
    ``Timer.timeit``, which adds hidden warm-up calls to every block).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for _ in range(warmup if estimate_s is None else 0):
            estimate_s = time_once(fn, device)
        if (estimate_s or 0.0) * min_runs >= min_run_time:
            times, number = [time_once(fn, device) for _ in range(min_runs)], 1
        else:
            timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
            m = timer.blocked_autorange(min_run_time=min_run_time)
            times, number = list(m.times), int(m.number_per_run)
            while len(times) < min_runs:
                times.append(time_block(fn, device, number))
    finally:
        torch.set_num_threads(previous)
    q25, median, q75 = np.quantile(times, [0.25, 0.5, 0.75])
    return Timing(float(median), float(q75 - q25), len(times), number, threads, tuple(map(float, times)))


def time_block(
    fn: Callable[[], object], device: torch.device | str, number: int, context: Callable | None = None
) -> float:
    """Seconds per call of ``number`` calls in a row, synchronised at both ends, inside
    ``context()`` where given (entered once per block, outside the clock)."""
    with context() if context is not None else contextlib.nullcontext():
        sync(device)
        start = timeit.default_timer()
        for _ in range(number):
            fn()
        sync(device)
        return (timeit.default_timer() - start) / number


def time_rounds(
    fns: dict[str, Callable[[], object]],
    device: torch.device | str = "cpu",
    *,
    rounds: int = 11,
    min_rounds: int = MIN_RUNS,
    block_s: float = 0.2,
    threads: int = 1,
    max_s: float = 60.0,
    enough: Callable[[dict[str, list[float]]], bool] | None = None,
    estimates: dict[str, float] | None = None,
    contexts: dict[str, Callable] | None = None,
) -> dict[str, list[float]]:
    """A/B timing: seconds per call of each ``fns[k]()`` in each round.

    A round times one block of each callable, in an order rotated by one each round,
    so that slow drift on a shared machine reaches every callable alike; compare them
    round by round. A block is as many calls as fill ``block_s`` (at least one), sized
    from one warm-up call each (or from ``estimates``, seconds of one call already
    made: then no warm-up is made). Rounds run until ``enough(times)`` says so (after
    ``min_rounds``), ``rounds`` are done, or ``max_s`` is spent. ``contexts``: per
    callable, a context each of its blocks runs in (its autograd mode).
    """
    import time

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        one = estimates or {k: time_once(f, device) for k, f in fns.items()}  # warm-up, and block sizes
        number = {k: max(1, round(block_s / max(t, 1e-9))) for k, t in one.items()}
        names = list(fns)
        out: dict[str, list[float]] = {k: [] for k in names}
        start = time.monotonic()
        for r in range(rounds):
            for k in names[r % len(names) :] + names[: r % len(names)]:
                out[k].append(time_block(fns[k], device, number[k], (contexts or {}).get(k)))
            done = r + 1 >= min_rounds
            if done and (time.monotonic() - start > max_s or (enough is not None and enough(out))):
                break
    finally:
        torch.set_num_threads(previous)
    return out


def gemm_rate(
    device: torch.device | str = "cpu",
    *,
    threads: int = 1,
    dtype: torch.dtype = torch.float32,
    sizes: tuple[int, ...] = (1024, 1536, 2048),
) -> dict:
    """This machine's dense matrix-product rate, the roofline for the flows' passes:
    GFLOP/s of ``torch.mm`` on n x n matrices (2 n^3 flops), the best over ``sizes``."""
    rates = {}
    for n in sizes:
        a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
        t = time_call(lambda a=a, b=b: torch.mm(a, b), device, threads=threads, min_run_time=0.2)
        rates[n] = 2 * n**3 / t.median_s / 1e9
    return {
        "gemm_gflops": max(rates.values()),
        "gemm_gflops_by_n": rates,
        "gemm_threads": threads,
        "gemm_dtype": str(dtype),
    }


def cache_sizes() -> dict[int, int]:
    """{level: bytes} of this CPU's data caches (Linux sysfs; empty elsewhere)."""
    from pathlib import Path

    sizes: dict[int, int] = {}
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            kind = (index / "type").read_text().strip()
            level = int((index / "level").read_text())
            text = (index / "size").read_text().strip()
        except (OSError, ValueError):
            continue
        if kind != "Instruction" and text[:-1].isdigit():
            sizes[level] = int(text[:-1]) * {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1], 1)
    return sizes


def copy_rate(device: torch.device | str, nbytes: int, *, threads: int = 1) -> float:
    """GB/s of ``dst.copy_(src)`` for float32 buffers of ``nbytes`` each, counting bytes
    read plus written (2 x nbytes per call)."""
    n = max(nbytes // 4, 1)
    src, dst = torch.full((n,), 1.0, device=device), torch.empty(n, device=device)
    t = time_call(lambda: dst.copy_(src), device, threads=threads, min_run_time=0.2)
    return 2 * n * 4 / t.median_s / 1e9


def memory_rates(device: torch.device | str = "cpu", *, threads: int = 1) -> dict:
    """This machine's memory ceilings for the roofline: the copy rate of buffers far
    larger than the last cache (``copy_gbps``, memory) and of buffers that fit half the
    L2 cache together (``cache_gbps``, in cache), bytes read plus written."""
    caches = cache_sizes() if torch.device(device).type == "cpu" else {}
    last = max(caches.values(), default=64 << 20)
    large = min(max(4 * last, 256 << 20), 512 << 20)  # 4x the last cache, within 512 MiB a buffer
    small = caches.get(2, 1 << 20) // 4  # two buffers in half the L2
    return {
        "copy_gbps": copy_rate(device, large, threads=threads),
        "copy_bytes": large,
        "cache_gbps": copy_rate(device, small, threads=threads),
        "cache_bytes": small,
    }
