"""Any track (a sweep, a fit) beyond one machine: ``python -m harness sweep|fit
--executor local|slurm``.

The track splits its configuration into jobs (:class:`harness.track.Track`): a sweep
one per (device, model, op, batch), so each holds whole series along d and every solver
of its problem; a fit one per (model, data set). Jobs go through submitit (Slurm, or its
local executor for trying without a cluster), at most ``max_parallel`` at a time: one
by default, so a timing job has its device to itself.

Each job is a direct run of the track into ``DIR/machines/<machine>/jobs/<job>/``
(rows written as measured, its own settings file with the machine's CPU, GPU, driver
and host; the device is checked there, not on the submitting host) and marks itself
finished with ``finished.json``. The parent waits with a progress bar and merges every
job's tables into ``DIR/machines/<machine>/`` and ``DIR/`` (the ``machine`` column names
the hardware), and the job's subfolders (checkpoints, density grids) into ``DIR/``. If
the parent dies, no finished job's rows are lost: ``--resume`` waits for jobs still
writing, collects the finished ones and submits the rest.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import env, store
from .errors import UserError
from .table import FINISHED, JOBS, LOCK, MACHINES, META_SHAPE, PLAN, PLAN_SHAPE, SUBMITIT, Col
from .track import Track

EXECUTORS = ("local", "slurm")


@dataclass
class Cluster:
    """How jobs are submitted (submitit's parameters in brackets)."""

    executor: str = "local"
    partition: str | None = None  # Slurm partition (slurm_partition)
    gpus_per_job: int = 0  # (gpus_per_node); a CUDA job takes at least 1
    cpus_per_job: int | None = None  # (cpus_per_task); default: the track's threads
    max_parallel: int = 1  # jobs in flight at once (slurm_array_parallelism likewise)
    job_minutes: int = 60  # time limit of one job (timeout_min)
    exclusive: bool = True  # Slurm: the node to itself (slurm_exclusive), so timings are not shared

    def validate(self) -> None:
        if self.executor not in EXECUTORS:
            raise UserError(f"unknown executor {self.executor!r}; allowed: {', '.join(EXECUTORS)}")
        for name in ("max_parallel", "job_minutes"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise UserError(f"{name.replace('_', '-')} must be an int >= 1, got {v!r}")
        if not isinstance(self.gpus_per_job, int) or self.gpus_per_job < 0:
            raise UserError(f"gpus-per-job must be an int >= 0, got {self.gpus_per_job!r}")
        if self.cpus_per_job is not None and (not isinstance(self.cpus_per_job, int) or self.cpus_per_job < 1):
            raise UserError(f"cpus-per-job must be an int >= 1, got {self.cpus_per_job!r}")
        if self.partition is not None and self.executor != "slurm":
            raise UserError("--slurm-partition needs --executor slurm")


def run_job(track: Track, config: Any, out: str, name: str) -> dict:
    """One job, on whatever machine runs it: the track's run into its machine's job
    folder (resumed where an earlier attempt left rows), then the finished mark."""
    track.validate(config, True)  # the device is checked where the job runs
    machine = store.slug(env.machine_name(track.device(config)))
    folder = Path(out) / MACHINES / machine / JOBS / name
    rows = track.job(config, folder)
    mark = {Col.MACHINE: machine, "rows_now": len(rows), "date": dt.datetime.now(dt.timezone.utc).isoformat()}
    store.write_json(folder / FINISHED, mark)
    return mark


def _folders(out: Path, name: str) -> list[Path]:
    return sorted((out / MACHINES).glob(f"*/{JOBS}/{name}"))


def finished(out: Path, name: str) -> bool:
    return any((f / FINISHED).is_file() for f in _folders(out, name))


def _running(out: Path, name: str) -> bool:
    """Whether a job still holds its folder's lock (an orphan of a dead parent)."""
    return any(store.busy(f / LOCK) for f in _folders(out, name))


def _executor(out: Path, cluster: Cluster, device: str, threads: int, name: str):
    import submitit

    try:
        executor = submitit.AutoExecutor(folder=out / SUBMITIT, cluster=cluster.executor)
    except RuntimeError as e:  # no srun on this machine
        raise UserError(f"--executor slurm needs a Slurm cluster ({e}); --executor local runs the jobs here") from None
    gpus = max(cluster.gpus_per_job, 1 if device == "cuda" else 0)
    executor.update_parameters(
        timeout_min=cluster.job_minutes,
        gpus_per_node=gpus,
        cpus_per_task=cluster.cpus_per_job or threads,
        name=f"flowbench-{name}",
    )
    if cluster.executor == "slurm":
        params = dict(slurm_array_parallelism=cluster.max_parallel, slurm_exclusive=cluster.exclusive)
        if cluster.partition:
            params["slurm_partition"] = cluster.partition
        executor.update_parameters(**params)
    return executor


def _prepare(out: Path, settings: dict, resume: bool, fresh: bool) -> None:
    """Checks the folder against the plan (or moves it aside with ``fresh``), then writes the plan."""
    if fresh:
        moved = store.move_aside(out)
        if moved is not None:
            print(f"moved the earlier contents of {out} aside into {moved}")
    else:
        store.require_kind(out, store.DISTRIBUTED)
    plan_path = out / PLAN
    if plan_path.exists():
        if not resume:
            raise UserError(
                f"{str(out)!r} already holds a distributed run: pass --resume to complete it, or --fresh to "
                "move it aside into previous/ and start anew"
            )
        old = store.read_json(plan_path, shape=PLAN_SHAPE)
        if old.get("config") != settings["config"] or old.get("track") != settings["track"]:
            diff = [k for k in settings["config"] if old.get("config", {}).get(k) != settings["config"][k]]
            raise UserError(f"cannot resume {str(out)!r} with other settings ({', '.join(diff) or 'track'} differ)")
    store.write_json(plan_path, settings)


def run(
    track: Track,
    config: Any,
    out: Path,
    cluster: Cluster,
    resume: bool = False,
    fresh: bool = False,
    progress: bool = True,
) -> list[dict]:
    """Runs ``track`` as jobs and merges their tables; returns the merged rows of its main
    table. A job that fails leaves its rows on disk and is named in the UserError
    raised after the merge (``--resume`` submits it again)."""
    from tqdm.auto import tqdm

    if resume and fresh:
        raise UserError("--resume and --fresh exclude each other: complete the run, or move it aside")
    track.validate(config, False)
    cluster.validate()
    out = store.ensure_folder(out)
    planned = track.jobs(config)
    with store.lock(out, track.name, doing=f"distributed over {len(planned)} jobs ({cluster.executor})"):
        settings = {
            "track": track.name,
            "config": json.loads(json.dumps(asdict(config))),
            "jobs": [n for n, _ in planned],
        }
        _prepare(out, {**settings, "executor": asdict(cluster)}, resume, fresh)
        todo = [(n, c) for n, c in planned if not finished(out, n)]
        bar = tqdm(total=len(planned), initial=len(planned) - len(todo), desc="jobs", unit="job", disable=not progress)
        waiting = [n for n, _ in todo if _running(out, n)]
        while waiting:  # jobs of a dead parent still writing: let them finish first
            bar.set_postfix_str(f"waiting for {len(waiting)} running job(s) of an earlier run")
            time.sleep(0.5)
            waiting = [n for n in waiting if _running(out, n)]
        todo = [(n, c) for n, c in todo if not finished(out, n)]
        failures: dict[str, str] = {}
        if todo:
            executor = _executor(out, cluster, track.device(config), config.threads, track.name)
            queue, running = list(todo), []
            if cluster.executor == "slurm":  # one job array: Slurm keeps max_parallel of them running
                with executor.batch():
                    running = [(n, executor.submit(run_job, track, c, str(out), n)) for n, c in queue]
                queue = []
            while queue or running:
                while queue and len(running) < cluster.max_parallel:  # local: the parent keeps the limit
                    name, job_config = queue.pop(0)
                    running.append((name, executor.submit(run_job, track, job_config, str(out), name)))
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
        rows = merge(out, track)
    if failures:
        named = "; ".join(f"{n} ({why})" for n, why in failures.items())
        raise UserError(f"{len(failures)} job(s) failed, their rows so far merged: {named}; --resume retries them")
    return rows


def _unique(rows: list[dict], key: tuple[str, ...]) -> list[dict]:
    return list({tuple(r.get(k, "") for k in key): r for r in rows}.values())


def merge(out: Path, track: Track) -> list[dict]:
    """Every job's tables into DIR/machines/<machine>/ and DIR/, once per key and
    machine, in job order; the jobs' subfolders into DIR/; settings per machine and for
    DIR. Returns the main table's merged rows."""
    merged: dict[str, list[dict]] = {spec.name: [] for spec in track.tables}
    metas = {}
    for machine_dir in sorted((out / MACHINES).glob("*")):
        jobs = sorted(p for p in (machine_dir / JOBS).glob("*") if p.is_dir())
        if not jobs:
            continue
        for spec in track.tables:
            key = spec.key + ((Col.MACHINE,) if Col.MACHINE in spec.columns else ())
            rows = [r for job in jobs if (job / spec.name).is_file() for r in _read(job / spec.name, spec)]
            rows = _unique(rows, key)
            store.write_table(machine_dir / spec.name, rows, spec.columns)
            merged[spec.name] += rows
        for job in jobs:
            for sub in track.folders:
                if (job / sub).is_dir():
                    (out / sub).mkdir(exist_ok=True)
                    for file in (job / sub).iterdir():
                        shutil.copy2(file, out / sub / file.name)
        settings = {
            j.name: store.read_json(j / track.meta, shape=META_SHAPE) for j in jobs if (j / track.meta).is_file()
        }
        meta = {**next(iter(settings.values()), {}), "jobs": sorted(settings)}
        meta["finished"] = sorted(j.name for j in jobs if (j / FINISHED).is_file())
        store.write_json(machine_dir / track.meta, meta)
        metas[machine_dir.name] = meta
    for spec in track.tables:
        store.write_table(out / spec.name, merged[spec.name], spec.columns)
    _combined_meta(out, track.meta, metas)
    return merged[track.tables[0].name]


def _read(path: Path, spec) -> list[dict]:
    """A job's table; a torn last line (a job killed mid-row) is left out with a warning."""
    return store.read_table(path, spec.columns, strict=False)


MACHINE_FIELDS = ("hostname", "cpu", "cpu_count", "gpu", "gpu_driver", "torch", Col.COMMIT, "date")


def _combined_meta(out: Path, name: str, metas: dict[str, dict]) -> None:
    """DIR's settings file: the first machine's environment (this one's if none),
    each machine's hardware under ``machines`` and the executor's settings."""
    plan = store.read_json(out / PLAN, missing={}, shape=PLAN_SHAPE)
    first = next(iter(metas.values()), None) or env.environment()
    combined = {**first, "machines": {m: {k: v.get(k) for k in MACHINE_FIELDS} for m, v in metas.items()}}
    combined["executor"] = plan.get("executor")
    store.write_json(out / name, combined)


__all__ = ["Cluster", "EXECUTORS", "merge", "run", "run_job"]
