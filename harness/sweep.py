"""The sweep: every (model, dim, op, device, batch) measured into one tidy table.

Rows go to ``DIR/results.csv`` the moment they are measured (an interrupted sweep
loses nothing; ``resume`` skips keys already there), with ``DIR/meta.json`` beside it.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import math
import os
import platform
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from . import __version__, peers
from .measure.counting import count_flops, count_params, peak_memory
from .measure.timing import MIN_RUNS, time_call, time_once
from .models import NAMES, OPS, build, run_op, unchecked

ALL_NAMES = NAMES + peers.NAMES
# --models shorthands
GROUPS = {"ours": NAMES, "peers": peers.NAMES, "all": ALL_NAMES}

COLUMNS = [
    "model", "dim", "op", "device", "batch", "kind", "median_s", "iqr_s", "runs", "status", "reason",
    "params_stored", "params_effective", "flops", "peak_mem_bytes", "threads", "dtype", "source", "commit",
]  # fmt: skip
KEY = ("model", "dim", "op", "device", "batch")
DEVICES = ("auto", "cpu", "cuda")

DEFAULT_DIMS = (2, 4, 8, 16, 32, 64, 128, 256)


@dataclass
class Config:
    """What to sweep and how. ``budget_s`` caps the measuring time of one configuration."""

    models: Sequence[str] = NAMES
    dims: Sequence[int] = DEFAULT_DIMS
    ops: Sequence[str] = OPS
    device: str = "auto"
    batches: Sequence[int] = (1024,)
    threads: int = 1
    budget_s: float = 30.0
    min_run_time: float = 0.5
    flops: bool = True
    # fvcore traces every op of a call, at ~30x the call's own time for the many small ops
    # of root-finding: calls slower than this are timed but their FLOPs left blank.
    flops_max_s: float = 1.0
    memory: bool = True
    seed: int = 0
    model_config: dict = field(default_factory=dict)

    @classmethod
    def quick(cls, **overrides) -> Config:
        """A small profile for CI and smoke tests: under a minute on two cores."""
        base = dict(dims=(2, 8), batches=(64,), budget_s=2.0, min_run_time=0.05)
        return cls(**{**base, **overrides})

    def validate(self) -> None:
        bad = [m for m in self.models if m not in ALL_NAMES]
        if bad:
            raise ValueError(f"unknown model {bad[0]!r}; allowed: {', '.join(ALL_NAMES)} (or {', '.join(GROUPS)})")
        bad = [o for o in self.ops if o not in OPS]
        if bad:
            raise ValueError(f"unknown op {bad[0]!r}; allowed: {', '.join(OPS)}")
        for name, values in (("dim", self.dims), ("batch", self.batches)):
            for v in values:
                if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                    raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads!r}")
        if self.budget_s <= 0:
            raise ValueError(f"budget must be > 0 seconds, got {self.budget_s!r}")
        resolve_devices(self.device)  # raises for a bad or absent device


def devices() -> list[str]:
    """Devices present on this machine."""
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def resolve_devices(device: str) -> list[str]:
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; allowed: {', '.join(DEVICES)}")
    if device == "auto":
        return devices()
    if device not in devices():
        raise ValueError(f"device {device!r} is not available here; present: {', '.join(devices())}")
    return [device]


# ---- provenance --------------------------------------------------------------------


def git_commit(path: Path | None = None) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=path or Path(__file__).parent,
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def metadata(config: Config) -> dict:
    return {
        "harness_version": __version__,
        "commit": git_commit(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "threads": config.threads,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
        "units": {
            "median_s": "seconds per call",
            "iqr_s": "seconds per call",
            "flops": "fvcore flops per call (1 multiply-add = 1 flop)",
            "peak_mem_bytes": "bytes",
            "params_stored": "scalars",
            "params_effective": "scalars",
        },
    }


# ---- the table on disk -------------------------------------------------------------


def key_of(row: dict) -> tuple:
    return tuple(str(row[k]) for k in KEY)


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


class RowWriter:
    """Appends rows to a CSV, flushed and synced per row."""

    def __init__(self, path: Path):
        self.path = path
        new = not path.exists() or path.stat().st_size == 0
        self.file = path.open("a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=COLUMNS, extrasaction="ignore")
        if new:
            self.writer.writeheader()

    def write(self, row: dict) -> None:
        self.writer.writerow(row)
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


# ---- measuring one configuration ---------------------------------------------------


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def estimate_seconds(history: list[tuple[int, float]], dim: int, kind: str) -> float | None:
    """Seconds of one call at ``dim``, extrapolated from earlier dims of the same series.

    The exponent is the local slope of the last two measured dims, kept within [1, 2.5];
    with one point it is 1 for a parallel pass (MADE widths grow with d) and 2 for
    sequential or iterative ops (d passes, each growing with d).
    """
    if not history:
        return None
    (d1, t1), (d2, t2) = ([(0, 0.0)] + history)[-2:]
    k = 1.0 if kind == "parallel" else 2.0
    if d1 > 0 and t1 > 0 and d2 > d1:
        k = min(max(math.log(t2 / t1) / math.log(d2 / d1), 1.0), 2.5)
    return t2 * (dim / d2) ** k


def build_any(name: str, dim: int, **config: object):
    """A reference model or a peer (harness.peers) by registry name."""
    return peers.build(name, dim, **config) if name in peers.NAMES else build(name, dim, **config)


def grad_off(model) -> contextlib.AbstractContextManager:
    """Inference mode, or no_grad for peers that take autograd derivatives inside a call."""
    return torch.inference_mode() if getattr(model, "inference_mode", True) else torch.no_grad()


def measure(model, op: str, device: str, batch: int, config: Config, estimate: float | None) -> dict:
    """Times, counts and records one configuration; returns the measured columns."""
    x = torch.randn(batch, model.dim, device=device)
    fn = lambda: run_op(model, op, x)  # noqa: E731
    budget = config.budget_s
    if estimate is not None and MIN_RUNS * estimate > budget:
        return dict(status="skipped", reason=f"estimated {MIN_RUNS} runs x {estimate:.3g} s > budget {budget:g} s")
    with grad_off(model), unchecked():
        torch.set_num_threads(config.threads)
        one = time_once(fn, device)  # warm-up, and the estimate the budget is checked on
        if MIN_RUNS * one > budget:
            return dict(status="skipped", reason=f"one call took {one:.3g} s; {MIN_RUNS} runs > budget {budget:g} s")
        run_time = min(max(config.min_run_time, MIN_RUNS * one), budget)
        t = time_call(fn, device, threads=config.threads, min_run_time=run_time, estimate_s=one)
        row = dict(status="ok", reason="", median_s=t.median_s, iqr_s=t.iqr_s, runs=t.runs)
        if config.memory:
            row["peak_mem_bytes"] = peak_memory(fn, device)
    if config.flops and one <= config.flops_max_s:
        torch.set_num_threads(config.threads)
        try:
            row["flops"] = count_flops(model, lambda m, x: run_op(m, op, x), x)[0]
        except Exception as e:  # fvcore's tracer cannot follow every library: keep the timing
            row["reason"] = f"flops not counted: fvcore failed ({type(e).__name__}: {e})".replace("\n", " ")[:300]
    elif config.flops:
        row["reason"] = f"flops not counted: one call took {one:.3g} s > {config.flops_max_s:g} s"
    return row


def grid(config: Config) -> list[tuple[str, str, int, str, int]]:
    """(device, model, dim, op, batch) in measuring order: dims ascending, so budgets
    can be extrapolated from the previous dim."""
    return [
        (device, name, dim, op, batch)
        for device in resolve_devices(config.device)
        for name in config.models
        for batch in config.batches
        for op in config.ops
        for dim in sorted(config.dims)
    ]


def run(config: Config, out: Path, resume: bool = False, progress: bool = True) -> list[dict]:
    """Runs the sweep into ``out``; returns the rows measured now (not the resumed ones)."""
    from tqdm.auto import tqdm

    config.validate()
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.csv"
    if not resume and results.exists():
        results.unlink()
    done = {key_of(r): r for r in read_rows(results)}
    meta = metadata(config)
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    commit = meta["commit"]

    todo = [g for g in grid(config) if key_of(dict(zip(("device", "model", "dim", "op", "batch"), g))) not in done]
    writer = RowWriter(results)
    rows: list[dict] = []
    # per (device, model, op, batch): measured (dim, seconds), and the dim first over budget
    history: dict[tuple, list[tuple[int, float]]] = {}
    over: dict[tuple, int] = {}

    def record(r: dict) -> None:
        series = (r["device"], r["model"], r["op"], int(r["batch"]))
        if r["status"] == "ok":
            history.setdefault(series, []).append((int(r["dim"]), float(r["median_s"])))
        elif r["status"] in ("skipped", "oom"):  # larger d only costs more
            over.setdefault(series, int(r["dim"]))

    for r in sorted(done.values(), key=lambda r: int(r["dim"])):  # resumed rows inform the budget
        record(r)
    built: dict[tuple, tuple] = {}  # (device, model, dim) -> (flow, (stored, effective))
    bar = tqdm(todo, desc="sweep", unit="config", disable=not progress, dynamic_ncols=True)
    try:
        for device, name, dim, op, batch in bar:
            bar.set_postfix_str(f"{name} d={dim} {op} {device} b={batch}")
            row = dict(
                model=name, dim=dim, op=op, device=device, batch=batch,
                threads=config.threads, dtype="float32", source="sweep", commit=commit,
            )  # fmt: skip
            missing = peers.unavailable(name) if name in peers.NAMES else None
            if missing:  # listed, not measured, and not recorded: it says nothing of larger d
                row.update(kind=peers.PEERS[name].cost[op], status="skipped", reason=f"unavailable: {missing}")
                writer.write(row)
                rows.append(row)
                continue
            if (device, name, dim) not in built:
                built.clear()  # one model in memory at a time
                torch.manual_seed(config.seed)
                flow = build_any(name, dim, **config.model_config).to(device).eval()
                built[(device, name, dim)] = (flow, count_params(flow))
            model, (stored, effective) = built[(device, name, dim)]
            row.update(kind=model.cost[op], params_stored=stored, params_effective=effective)
            series = (device, name, op, batch)
            if op in getattr(model, "unsupported", {}):
                row.update(status="skipped", reason=model.unsupported[op])
            elif series in over and over[series] < dim:
                row.update(status="skipped", reason=f"over budget already at d={over[series]}")
            else:
                estimate = estimate_seconds(history.get(series, []), dim, model.cost[op])
                try:
                    row.update(measure(model, op, device, batch, config, estimate))
                except Exception as e:  # record, and go on with the sweep
                    kind = "oom" if _is_oom(e) else "error"
                    row.update(status=kind, reason=f"{type(e).__name__}: {e}".replace("\n", " ")[:300])
                    if device == "cuda":
                        torch.cuda.empty_cache()
            record(row)
            writer.write(row)
            rows.append(row)
    finally:
        writer.close()
        bar.close()
    return rows


def summary(rows: Iterable[dict]) -> str:
    """A plain-text table of measured rows: median ms, runs and status."""
    from tabulate import tabulate

    table = [
        [
            r["model"], r["dim"], r["op"], r["device"], r["batch"],
            f"{float(r['median_s']) * 1e3:.3g}" if r.get("median_s") not in (None, "") and r["status"] == "ok" else "",
            r.get("runs", ""), r["status"] if r["status"] == "ok" else f"{r['status']}: {r.get('reason', '')}",
        ]
        for r in rows
    ]  # fmt: skip
    headers = ["model", "d", "op", "device", "batch", "median (ms)", "runs", "status"]
    return tabulate(table, headers, tablefmt="github")
