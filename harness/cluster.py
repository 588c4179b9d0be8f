"""Sweeps (and fits) beyond one machine: ``python -m harness sweep --executor local|slurm``.

A fit (``python -m harness fit --executor ...``) runs one job per (model, data set) and
merges fit.csv, curves.csv, checkpoints and density grids the same way.

The grid is split into jobs, one per (device, model, op, batch): each job holds whole
series along d (so the budget extrapolates along its dims as in a direct sweep) and
every solver of its problem (so each is checked against the reference solver's output
in the same process). Jobs go through submitit (Slurm, or its local executor for
trying without a cluster), at most ``max_parallel`` at a time: one by default, so a
timing job has its device to itself.

Each job is a sweep of its own into ``DIR/machines/<machine>/jobs/<job>/`` (rows
written as measured, its own meta.json with the machine's CPU, GPU, driver and host),
and marks itself finished with ``finished.json``. The parent waits with a progress bar
and merges every job's rows into ``DIR/machines/<machine>/results.csv`` and
``DIR/results.csv`` (the ``machine`` column names the hardware). If the parent dies, no
finished job's rows are lost: ``--resume`` waits for jobs still writing, collects the
finished ones and submits the rest (an unfinished job resumes its own folder).
"""

from __future__ import annotations

import csv
import datetime as dt
import fcntl
import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .files import ensure_folder, write_table
from .fit import FitConfig
from .sweep import GRID, Config, ResultsFolder, grid, machine_name, metadata
from .sweep import run as run_sweep
from .table import (
    CHECKPOINTS,
    COLUMNS,
    CURVE_COLUMNS,
    CURVES,
    DENSITIES,
    FIT,
    FIT_COLUMNS,
    FIT_META,
    META,
    RESULTS,
    Col,
    key_of,
)

EXECUTORS = ("local", "slurm")
MACHINES = "machines"  # DIR/machines/<machine>/
JOBS = "jobs"  # DIR/machines/<machine>/jobs/<job>/
FINISHED = "finished.json"  # a job's mark: all its rows are on disk
PLAN = "plan.json"  # the parent's settings and jobs, checked on resume
SUBMITIT = "submitit"  # submitit's own logs and pickles


@dataclass
class Cluster:
    """How jobs are submitted (submitit's parameters in brackets)."""

    executor: str = "local"
    partition: str | None = None  # Slurm partition (slurm_partition)
    gpus_per_job: int = 0  # (gpus_per_node); a CUDA job takes at least 1
    cpus_per_job: int | None = None  # (cpus_per_task); default: the sweep's threads
    max_parallel: int = 1  # jobs in flight at once (slurm_array_parallelism likewise)
    job_minutes: int = 60  # time limit of one job (timeout_min)
    exclusive: bool = True  # Slurm: the node to itself (slurm_exclusive), so timings are not shared

    def validate(self) -> None:
        if self.executor not in EXECUTORS:
            raise ValueError(f"unknown executor {self.executor!r}; allowed: {', '.join(EXECUTORS)}")
        for name in ("max_parallel", "job_minutes"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name.replace('_', '-')} must be an int >= 1, got {v!r}")
        if not isinstance(self.gpus_per_job, int) or self.gpus_per_job < 0:
            raise ValueError(f"gpus-per-job must be an int >= 0, got {self.gpus_per_job!r}")
        if self.cpus_per_job is not None and (not isinstance(self.cpus_per_job, int) or self.cpus_per_job < 1):
            raise ValueError(f"cpus-per-job must be an int >= 1, got {self.cpus_per_job!r}")
        if self.partition is not None and self.executor != "slurm":
            raise ValueError("--slurm-partition needs --executor slurm")


def slug(text: str) -> str:
    """A folder name from free text: lower-case letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:80] or "unknown"


def jobs_of(config: Config | FitConfig) -> list[tuple[str, Config | FitConfig]]:
    """(job name, job config) per (device, model, op, batch) of the grid, in grid order;
    for a fit, per (data set, model)."""
    if isinstance(config, FitConfig):
        return [
            (slug(f"fit-{m}-{d}"), replace(config, models=(m,), data=(d,))) for d in config.data for m in config.models
        ]
    seen: dict[tuple, Config] = {}
    for device, model, _dim, op, batch, _solver in grid(config):
        key = (device, model, op, batch)
        if key not in seen:
            seen[key] = replace(config, models=(model,), ops=(op,), batches=(batch,), device=device)
    return [(slug(f"{d}-{m}-{o}-b{b}"), c) for (d, m, o, b), c in seen.items()]


def run_job(config: Config | FitConfig, out: str, name: str) -> dict:
    """One job, on whatever machine runs it: a sweep (or a fit) into its machine's job
    folder (resumed where an earlier attempt left rows), then the finished mark."""
    machine = slug(machine_name(config.device))
    folder = Path(out) / MACHINES / machine / JOBS / name
    if isinstance(config, FitConfig):
        from .fit import run as run_fit

        rows = run_fit(config, folder, resume=(folder / FIT).is_file(), progress=False)
    else:
        rows = run_sweep(config, folder, resume=(folder / RESULTS).is_file(), progress=False)
    mark = {Col.MACHINE: machine, "rows_now": len(rows), "date": dt.datetime.now(dt.timezone.utc).isoformat()}
    tmp = folder / f"{FINISHED}.tmp"
    tmp.write_text(json.dumps(mark) + "\n")
    tmp.replace(folder / FINISHED)
    return mark


def _folders(out: Path, name: str) -> list[Path]:
    return sorted((out / MACHINES).glob(f"*/{JOBS}/{name}"))


def _busy(folder: Path) -> bool:
    """Whether a job still holds the folder's lock (an orphan of a dead parent)."""
    lock = folder / ".lock"
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def finished(out: Path, name: str) -> bool:
    return any((f / FINISHED).is_file() for f in _folders(out, name))


def _executor(out: Path, cluster: Cluster, config: Config):
    import submitit

    try:
        executor = submitit.AutoExecutor(folder=out / SUBMITIT, cluster=cluster.executor)
    except RuntimeError as e:  # no srun on this machine
        raise ValueError(f"--executor slurm needs a Slurm cluster ({e}); --executor local runs the jobs here") from None
    gpus = max(cluster.gpus_per_job, 1 if config.device == "cuda" else 0)
    executor.update_parameters(
        timeout_min=cluster.job_minutes,
        gpus_per_node=gpus,
        cpus_per_task=cluster.cpus_per_job or config.threads,
        name="flowbench-sweep",
    )
    if cluster.executor == "slurm":
        params = dict(slurm_array_parallelism=cluster.max_parallel, slurm_exclusive=cluster.exclusive)
        if cluster.partition:
            params["slurm_partition"] = cluster.partition
        executor.update_parameters(**params)
    return executor


def _prepare(out: Path, config: Config, cluster: Cluster, names: list[str], resume: bool, fresh: bool) -> None:
    plan_path = out / PLAN
    settings = {"config": json.loads(json.dumps(asdict(config))), "jobs": names}
    if plan_path.exists() and not resume:
        if not fresh:
            raise ValueError(
                f"{str(out)!r} already holds a distributed sweep: pass --resume to complete it, or --fresh to "
                f"move it aside into {str(out / 'previous')!r} and start anew"
            )
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        aside = out / "previous" / f"distributed-{stamp}"
        aside.mkdir(parents=True)
        for name in (MACHINES, PLAN, RESULTS, META, SUBMITIT, FIT, FIT_META, CURVES, CHECKPOINTS, DENSITIES):
            if (out / name).exists():
                shutil.move(str(out / name), str(aside / name))
    elif plan_path.exists():
        old = json.loads(plan_path.read_text())
        if old.get("config") != settings["config"]:
            diff = [k for k in settings["config"] if old.get("config", {}).get(k) != settings["config"][k]]
            raise ValueError(f"cannot resume {str(out)!r} with other settings ({', '.join(diff)} differ)")
    elif ((out / RESULTS).exists() or (out / FIT).exists()) and not fresh:
        raise ValueError(f"{str(out)!r} holds a direct run's table: give another --out, or --fresh")
    settings["executor"] = asdict(cluster)
    tmp = plan_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(settings, indent=2) + "\n")
    tmp.replace(plan_path)


def run(
    config: Config | FitConfig,
    out: Path,
    cluster: Cluster,
    resume: bool = False,
    fresh: bool = False,
    progress: bool = True,
) -> list[dict]:
    """Runs the sweep as jobs and merges their rows; returns the merged rows. A job
    that fails leaves its rows on disk and is named in the ValueError raised after the
    merge (``--resume`` submits it again)."""
    from tqdm.auto import tqdm

    config.validate()
    cluster.validate()
    out = ensure_folder(out)
    planned = jobs_of(config)
    parent = ResultsFolder(out)  # the parent's lock on DIR: one parent per folder
    with parent.lock():
        _prepare(out, config, cluster, [n for n, _ in planned], resume, fresh)
        todo = [(n, c) for n, c in planned if not finished(out, n)]
        bar = tqdm(total=len(planned), initial=len(planned) - len(todo), desc="jobs", unit="job", disable=not progress)
        waiting = [n for n, _ in todo if any(_busy(f) for f in _folders(out, n))]
        while waiting:  # jobs of a dead parent still writing: let them finish first
            bar.set_postfix_str(f"waiting for {len(waiting)} running job(s) of an earlier run")
            time.sleep(0.5)
            waiting = [n for n in waiting if any(_busy(f) for f in _folders(out, n))]
        todo = [(n, c) for n, c in todo if not finished(out, n)]
        failures: dict[str, str] = {}
        if todo:
            executor = _executor(out, cluster, config)
            queue, running = list(todo), []
            if cluster.executor == "slurm":  # one job array: Slurm keeps max_parallel of them running
                with executor.batch():
                    running = [(n, executor.submit(run_job, c, str(out), n)) for n, c in queue]
                queue = []
            while queue or running:
                while queue and len(running) < cluster.max_parallel:  # local: the parent keeps the limit
                    name, job_config = queue.pop(0)
                    running.append((name, executor.submit(run_job, job_config, str(out), name)))
                time.sleep(0.2)
                for name, job in [r for r in running if r[1].done()]:
                    running.remove((name, job))
                    try:
                        job.result()
                    except Exception as e:  # a job's failure: its rows stay, the others go on
                        failures[name] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
                    bar.update(1)
                    bar.set_postfix_str(f"{name} done")
        bar.close()
        rows = merge_fit(out) if isinstance(config, FitConfig) else merge(out)
    if failures:
        named = "; ".join(f"{n} ({why})" for n, why in failures.items())
        raise ValueError(f"{len(failures)} job(s) failed, their rows so far merged: {named}; --resume retries them")
    return rows


def _read(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def merge(out: Path) -> list[dict]:
    """Every job's rows into DIR/machines/<machine>/results.csv and DIR/results.csv,
    once per (key, machine), in grid order; meta.json per machine and for DIR."""
    everything, metas = [], {}
    for machine_dir in sorted((out / MACHINES).glob("*")):
        rows, jobs = [], {}
        for job in sorted((machine_dir / JOBS).glob("*")):
            if (job / RESULTS).is_file():
                rows += _read(job / RESULTS)
            if (job / META).is_file():
                jobs[job.name] = json.loads((job / META).read_text())
        if not jobs:
            continue
        unique = {(key_of(r), r[Col.MACHINE]): r for r in rows}
        rows = list(unique.values())
        write_table(machine_dir / RESULTS, rows, COLUMNS)
        first = next(iter(jobs.values()))
        meta = {**first, "jobs": sorted(jobs), "finished": sorted(j for j in jobs if finished(out, j))}
        (machine_dir / META).write_text(json.dumps(meta, indent=2) + "\n")
        metas[machine_dir.name] = meta
        everything += rows
    write_table(out / RESULTS, everything, COLUMNS)
    _combined_meta(out, META, metas, metadata(Config(), roofline=False))
    return everything


def merge_fit(out: Path) -> list[dict]:
    """Every fit job's rows into DIR/fit.csv, its curves into DIR/curves.csv, and its
    checkpoints and density grids into DIR/checkpoints and DIR/densities: a folder the
    report reads like a direct fit's."""
    rows, curves, metas = [], [], {}
    for job in sorted((out / MACHINES).glob(f"*/{JOBS}/*")):
        if (job / FIT).is_file():
            rows += _read(job / FIT)
        if (job / CURVES).is_file():
            curves += _read(job / CURVES)
        if (job / FIT_META).is_file():
            metas[job.parent.parent.name] = json.loads((job / FIT_META).read_text())
        for folder in (CHECKPOINTS, DENSITIES):
            if (job / folder).is_dir():
                (out / folder).mkdir(exist_ok=True)
                for file in (job / folder).iterdir():
                    shutil.copy2(file, out / folder / file.name)
    rows = list({(r[Col.MODEL], r[Col.DATA]): r for r in rows}.values())
    write_table(out / FIT, rows, FIT_COLUMNS)
    write_table(out / CURVES, curves, CURVE_COLUMNS)
    _combined_meta(out, FIT_META, metas, {})
    return rows


def _combined_meta(out: Path, name: str, metas: dict[str, dict], fallback: dict) -> None:
    """DIR's settings file: the first machine's environment (``fallback`` if none),
    each machine's hardware under ``machines`` and the executor's settings."""
    plan = json.loads((out / PLAN).read_text()) if (out / PLAN).exists() else {}
    first = next(iter(metas.values()), fallback)
    combined = {**first, "machines": {m: {k: v.get(k) for k in MACHINE_FIELDS} for m, v in metas.items()}}
    combined["executor"] = plan.get("executor")
    (out / name).write_text(json.dumps(combined, indent=2) + "\n")


MACHINE_FIELDS = ("hostname", "cpu", "cpu_count", "gpu", "gpu_driver", "torch", Col.COMMIT, "date")


__all__ = ["Cluster", "EXECUTORS", "GRID", "jobs_of", "merge", "run", "run_job"]
