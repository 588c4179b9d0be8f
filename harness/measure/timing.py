"""Timing a callable properly: device-synchronised, warmed up, median of blocked runs
with a fixed thread count, on ``torch.utils.benchmark``."""

from __future__ import annotations

import timeit
from collections.abc import Callable
from dataclasses import dataclass

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
        min_runs: measured blocks at least, so the median and IQR mean something for
            calls slower than ``min_run_time``.
        warmup: calls before measuring (allocator, caches, CUDA kernels).
        estimate_s: seconds of one call if already known (skips one warm-up call).

    ``torch.utils.benchmark.Timer``'s clock synchronises the accelerator on every reading.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for _ in range(warmup if estimate_s is None else max(warmup - 1, 0)):
            estimate_s = time_once(fn, device)
        run_time = max(min_run_time, min_runs * (estimate_s or 0.0) * 1.05)
        timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
        m = timer.blocked_autorange(min_run_time=run_time)
        while len(m.times) < min_runs:  # autorange may fit one big block into run_time
            m = benchmark.Measurement.merge([m, timer.timeit(m.number_per_run)])[0]
    finally:
        torch.set_num_threads(previous)
    return Timing(float(m.median), float(m.iqr), len(m.times), int(m.number_per_run), threads)


def time_rounds(
    fns: dict[str, Callable[[], object]],
    device: torch.device | str = "cpu",
    *,
    rounds: int = 11,
    block_s: float = 0.2,
    threads: int = 1,
    max_s: float = 60.0,
) -> dict[str, list[float]]:
    """A/B timing: seconds per call of each ``fns[k]()`` in each round.

    A round times one block of each callable, in an order rotated by one each round,
    so that slow drift on a shared machine reaches every callable alike; compare them
    round by round. A block is as many calls as fill ``block_s`` (at least one), sized
    from a warm-up call. Rounds shrink (to 3 at least) to keep within ``max_s``.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        one = {k: time_once(f, device) for k, f in fns.items()}  # warm-up
        one = {k: time_once(f, device) for k, f in fns.items()}
        number = {k: max(1, round(block_s / max(t, 1e-9))) for k, t in one.items()}
        per_round = sum(number[k] * one[k] for k in fns)
        rounds = max(MIN_RUNS, min(rounds, int(max_s / max(per_round, 1e-9))))
        timers = {k: benchmark.Timer(stmt="fn()", globals={"fn": f}, num_threads=threads) for k, f in fns.items()}
        names = list(fns)
        out: dict[str, list[float]] = {k: [] for k in names}
        for r in range(rounds):
            for k in names[r % len(names) :] + names[: r % len(names)]:
                out[k].append(float(timers[k].timeit(number[k]).median))
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
