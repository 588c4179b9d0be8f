"""The sweep: every (model, dim, op, device, batch, solver, backend) measured into one tidy table.

Rows go to ``DIR/results.csv`` the moment they are measured (an interrupted sweep
loses nothing; ``resume`` skips keys already there), with ``DIR/meta.json`` beside it;
the folder is kept by :mod:`harness.store`'s rules. Each configuration is measured in a
worker process killed at its deadline (:mod:`harness.worker`), by
:class:`harness.measurer.Measurer`.
"""

from __future__ import annotations

import json
import shutil
import sys
import uuid
from collections.abc import Iterable
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

import numpy as np

from . import env, peers, registry, store
from .errors import Interrupted, UserError
from .grid import (
    GRID,
    Config,
    Probe,
    Task,
    Unit,
    cost_of,
    deadline_s,
    essential,
    estimate_seconds,
    grid,
    predicted_seconds,
    takes_context,
    units,
)
from .intervals import runs_of
from .measure import allocator
from .measure.call import round_text
from .measurer import READY, Measurer
from .models import NAMES
from .ops import SAMPLE
from .table import (
    COUNTS,
    COUNTS_SHAPE,
    ERROR,
    META,
    META_SHAPE,
    OK,
    OOM,
    RESULTS_TABLE,
    SKIPPED,
    TIMEOUT,
    UNITS,
    WORKER_LOCK,
    Col,
    Row,
    key_of,
)
from .track import Track
from .worker import Worker, WorkerDied

__all__ = ["Config", "Interrupted", "TRACK", "run", "summary"]


def metadata(config: Config, new: bool = True) -> dict:
    """The environment of a sweep; for a new table also each device's GEMM rate and
    memory copy rates (the roofline's ceilings, a few seconds; not with ``roofline=False``)."""
    from .grid import resolve_devices
    from .measure.timing import gemm_rate, memory_rates

    meta = env.environment()
    meta.update(allocator=allocator.tune(), threads=config.threads, units=UNITS)
    if new and config.roofline:
        meta["roofline"] = {
            d: {**gemm_rate(d, threads=config.threads), **memory_rates(d, threads=config.threads)}
            for d in resolve_devices(config.device)
        }
    return meta


def counts_key(row: dict, config: Config) -> str:
    """The cache key of a configuration's FLOPs and memory: the same configuration,
    model config and code (committed or not: :func:`harness.env.code_version`)."""
    parts = [row[k] for k in (Col.MODEL, Col.DIM, Col.OP, Col.DEVICE, Col.BATCH, Col.SOLVER)]
    if int(row.get(Col.CONTEXT) or 0):  # (unconditional keys as before: the committed counts hold)
        parts[0] = f"{row[Col.MODEL]}@context={int(row[Col.CONTEXT])}"
    parts.append(env.code_version(row[Col.MODEL]))
    return "|".join(map(str, parts)) + "|" + json.dumps(config.model_config, sort_keys=True)


class _Series:
    """What the parent learns along each series (device, model, op, batch, solver, backend): the
    measured (dim, seconds, flops), the first dim over budget, the first oom or timeout."""

    def __init__(self) -> None:
        self.history: dict[tuple, list[tuple]] = {}
        self.over: dict[tuple, int] = {}
        self.failed: dict[tuple, tuple[int, str]] = {}

    @staticmethod
    def of(r: dict) -> tuple:
        context = int(r.get(Col.CONTEXT) or 0)
        return (r[Col.DEVICE], r[Col.MODEL], r[Col.OP], int(r[Col.BATCH]), r[Col.SOLVER], r[Col.BACKEND], context)

    def record(self, r: dict) -> None:
        series = self.of(r)
        if r[Col.STATUS] == OK:
            flops = float(r[Col.FLOPS]) if r.get(Col.FLOPS) not in (None, "") else None
            self.history.setdefault(series, []).append((int(r[Col.DIM]), float(r[Col.MEDIAN_S]), flops))
        elif r[Col.STATUS] in (OOM, TIMEOUT):  # larger d only costs more, whatever the cell
            self.failed.setdefault(series, (int(r[Col.DIM]), r[Col.STATUS]))
        elif r[Col.STATUS] == SKIPPED:
            self.over.setdefault(series, int(r[Col.DIM]))

    def skip(self, series: tuple, dim: int, is_essential: bool) -> str:
        over_at, (failed_at, failure) = self.over.get(series), self.failed.get(series, (None, ""))
        if failed_at and failed_at < dim:
            return f"{failure} already at d={failed_at}"
        if over_at and over_at < dim and not is_essential:
            return f"over budget already at d={over_at}"
        return ""

    def eta(self, remaining: list[tuple], config: Config) -> float:
        """Seconds the remaining configurations (the current one included) are predicted
        to take: from their series where it has times, else a second for a cell of the
        default grid and the budget for any other."""
        return sum(
            predicted_seconds(
                self.history.get((dv, m, op, b, s, be, c), []),
                d,
                1.0 if essential(m, s, d, b, op, be, dv, c) else config.budget_s,
            )
            for dv, m, d, op, b, s, be, c in remaining
        )


def run(config: Config, out: Path, resume: bool = False, progress: bool = True, fresh: bool = False) -> list[dict]:
    """Runs the sweep into ``out``; returns the rows measured now (not the resumed ones).

    ``out`` is locked while written. Without ``resume`` an existing table is refused,
    or with ``fresh`` the folder's contents are moved aside into ``out/previous/``; with
    ``resume`` a torn last line is cut (and measured again), and a table of other
    columns or settings is refused. Ctrl-C raises :class:`Interrupted` once the rows so
    far are safe.
    """
    from tqdm.auto import tqdm

    config.validate()
    out = Path(out)
    settings = json.loads(json.dumps(asdict(config)))
    folder = store.Run(
        out,
        RESULTS_TABLE,
        what="sweep",
        meta_name=META,
        config=settings,
        meta=partial(metadata, config),
        resume=resume,
        fresh=fresh,
        doing=f"measuring {', '.join(config.models)} at d = {', '.join(map(str, config.dims))}",
    )
    with folder:
        if not store.wait_free(out / WORKER_LOCK, 30):
            raise UserError(f"a measuring worker of an earlier sweep still runs in {str(out)!r}; wait for it to end")
        fresh = config.processes > 1  # the processes are what its intervals sample: each a new interpreter
        worker = Worker(partial(Measurer, config), lock_path=out / WORKER_LOCK, fresh=fresh) if config.isolate else None
        local = None if config.isolate else Measurer(config)
        broken = _probe(config, worker, local)
        done = {key_of(r): r for r in folder.rows}
        commit = env.git_commit()
        todo = [g for g in grid(config, list(broken)) if key_of(dict(zip(GRID, g))) not in done]
        rows: list[dict] = []
        series = _Series()
        for r in sorted(done.values(), key=lambda r: int(r[Col.DIM])):  # resumed rows inform the budget
            series.record(r)
        counts_path = out / COUNTS
        if folder.moved is not None and (folder.moved / COUNTS).exists() and not counts_path.exists():
            # a cache, not a result: counts are keyed by the code that ran, so the earlier
            # run's still hold for the configurations whose code is unchanged
            shutil.copy2(folder.moved / COUNTS, counts_path)
        counts = store.read_json(counts_path, missing={}, shape=COUNTS_SHAPE)
        bar = tqdm(total=len(todo), desc="sweep", unit="config", disable=not progress, dynamic_ncols=True)
        group = f"{env.git_commit()}-{uuid.uuid4().hex[:8]}"  # this run's rounds: pairs never cross runs

        def stub(entry: tuple) -> Row:
            device, name, dim, op, batch, solver, backend, context = entry
            family, library = ("", name.partition(":")[0]) if name in broken else registry.identity(name)
            row: Row = dict(model=name, family=family, library=library, dim=dim, op=op, device=device, batch=batch)
            row.update(context=context, contexts_per_call=(1 if op == SAMPLE else batch) if context else "")
            row.update(solver=solver, backend=backend, threads=config.threads, dtype="float32", source="sweep")
            row.update(commit=commit, machine=env.machine_name(device))
            missing = peers.unavailable(name) if name in peers.NAMES else None
            unconditional = takes_context(name) if context and name not in broken else ""
            if missing:  # listed, not measured: it says nothing of larger d
                row.update(kind=peers.PEERS[name].cost[op], status=SKIPPED, reason=f"unavailable: {missing}")
            elif name in broken:
                row.update(status=ERROR, reason=broken[name])
            elif unconditional:
                row.update(kind=cost_of(name)[op], status=SKIPPED, reason=unconditional)
            return row

        def task(row: Row) -> Task:
            this, d, b = series.of(row), int(row[Col.DIM]), int(row[Col.BATCH])
            name, op, solver, backend = row[Col.MODEL], row[Col.OP], row[Col.SOLVER], row[Col.BACKEND]
            context = int(row[Col.CONTEXT])
            is_essential = essential(name, solver, d, b, op, backend, row[Col.DEVICE], context)
            estimate = estimate_seconds(series.history.get(this, []), d)
            skip = series.skip(this, d, is_essential)
            cached = counts.get(counts_key(row, config))
            return Task(row[Col.DEVICE], name, d, op, b, solver, backend, context, estimate, skip, is_essential, cached)

        def finish(measured: list[Row]) -> None:
            for row in measured:
                if row[Col.STATUS] == OK and row.get(Col.FLOPS) not in (None, ""):
                    wanted = (Col.FLOPS, Col.BYTES_MOVED, Col.PEAK_MEM_BYTES)
                    counts[counts_key(row, config)] = {k: row[k] for k in wanted if row.get(k) not in (None, "")}
                    store.write_json(counts_path, counts)
                series.record(row)
                folder.write(row)
                rows.append(row)
            bar.update(len(measured))

        try:
            for (device, batch, dim), alone, together in units(todo):
                steps = [([e], False) for e in alone] + ([(together, True)] if together else [])
                for entries, is_paired in steps:
                    stubs = [stub(e) for e in entries]
                    ready = [r for r in stubs if Col.STATUS not in r]
                    if ready:
                        tasks = tuple(task(r) for r in ready)
                        first = tasks[0]
                        what = (
                            "default algorithms, interleaved"
                            if is_paired
                            else f"{first.model} {first.op} {first.solver} {first.backend}"
                        )
                        bar.set_postfix_str(
                            f"d={dim} {what}, ~{series.eta(todo[len(rows) :], config) / 60:.0f} min left"
                        )
                        if is_paired:
                            answers = _together(Unit(device, dim, batch, (), tasks, group), worker, local, config)
                        else:
                            unit = Unit(device, dim, batch, tasks, (), group)
                            answers = local(unit) if worker is None else _isolated(worker, unit, config)
                        for row, answer in zip(ready, answers):
                            row.update(answer)
                    finish(stubs)
        except KeyboardInterrupt:  # what the table holds, whichever line the signal came in
            raise Interrupted(store.count_rows(folder.path), folder.path) from None
        finally:
            if worker is not None:
                worker.close()
            bar.close()
            folder.update_meta(load_end=env.load_average())
            meta = store.read_json(folder.meta_path, missing={}, shape=META_SHAPE)
            busy = env.overloaded([meta.get("load_start"), meta.get("load_end")], meta.get("cpu_count"))
            if busy:
                print(f"warning: {busy}", file=sys.stderr)
    return rows


def _probe(config: Config, worker, local) -> dict[str, str]:
    """Describes every user's flow of the sweep (building it runs the user's code) in
    the worker, with a deadline; returns the flows that could not be described, with why."""
    broken = {}
    for name in config.models:
        if name in NAMES or name in peers.NAMES:
            continue
        limit = deadline_s(config)
        try:
            found = worker.run(Probe(name), limit) if worker is not None else local(Probe(name))
        except WorkerDied as e:
            found = f"cannot build it: {e}"
        if found is None:
            found = f"cannot build it: building it at d=1 took over {limit:g} s (killed)"
        if isinstance(found, str):
            broken[name] = found
        else:
            registry.learn(name, found)
    return broken


def _together(unit: Unit, worker, local, config: Config) -> list[dict]:
    """The default algorithms of one device, d and batch, timed together in
    ``config.processes`` fresh worker processes one after another (:func:`_together_once`
    each; without isolation, in this process once): each ok row keeps every process's
    rounds in ``round_s``, in order, so round r of one flow still pairs with round r of
    another; FLOPs and memory are counted in the first process only."""
    rows = _together_once(unit, worker, local, config)
    for _ in range(config.processes - 1 if worker is not None else 0):
        worker.kill()  # a fresh process: its code layout, allocations and neighbours differ
        wanted = (Col.FLOPS, Col.BYTES_MOVED, Col.PEAK_MEM_BYTES)
        again = replace(
            unit,
            together=tuple(
                replace(t, counts={k: r[k] for k in wanted if r.get(k) not in (None, "")} or t.counts)
                for t, r in zip(unit.together, rows)
            ),
        )
        for row, more in zip(rows, _together_once(again, worker, local, config)):
            if row.get(Col.STATUS) == OK and more.get(Col.STATUS) == OK:
                runs = runs_of(row[Col.ROUND_S]) + runs_of(more[Col.ROUND_S])
                q25, median, q75 = np.quantile(runs, [0.25, 0.5, 0.75])
                row.update(median_s=float(median), iqr_s=float(q75 - q25), runs=len(runs), round_s=round_text(runs))
            elif row.get(Col.STATUS) == OK:  # a later process failed it: that is the row's outcome
                row.update(status=more.get(Col.STATUS), reason=f"in a later process: {more.get(Col.REASON, '')}")
    return rows


def _together_once(unit: Unit, worker, local, config: Config) -> list[dict]:
    """The default algorithms of one device, d and batch, timed together: each task's
    checked call is one worker call with its own deadline (a flow that hangs or crashes
    takes only its own row), kept in the worker; then one call times the survivors in
    interleaved rounds. What a restarted worker lost is prepared again."""
    run = local if worker is None else (lambda u: _isolated(worker, u, config))
    answers: dict[int, dict] = {}
    kept: dict[int, int] = {}  # prepared, with the worker (its start count) that keeps it
    pending = list(range(len(unit.together)))
    while pending:
        for i in pending:
            (answers[i],) = run(replace(unit, together=(unit.together[i],), prepare_only=True))
            if answers[i].pop(READY, False):
                kept[i] = worker.starts if worker is not None else 0
        alive = worker.starts if worker is not None else 0
        pending = [i for i in kept if kept[i] != alive]  # lost when a later one's worker died
    pending = list(kept)
    if pending:
        timed = run(replace(unit, together=tuple(unit.together[i] for i in pending)))
        for i, row in zip(pending, timed):
            answers[i] = row
    return [answers[i] for i in range(len(unit.together))]


def _isolated(worker, unit: Unit, config: Config) -> list[dict]:
    """The worker's rows of a unit, or ``timeout`` or ``error`` rows when it gave none:
    the unit's deadline is the sum of its configurations' (harness.grid.deadline_s)."""
    limit = sum(deadline_s(config, t.essential, t.backend) for t in unit.tasks)
    kinds = [cost_of(t.model)[t.op] for t in unit.tasks]
    try:
        answer = worker.run(unit, limit)
    except WorkerDied as e:
        return [dict(kind=k, status=ERROR, reason=str(e)) for k in kinds]
    if answer is None:
        what = "the paired measurement of its d and batch was " if unit.together else ""
        reason = f"{what}killed after {limit:g} s (budget {config.budget_s:g} s)"
        return [dict(kind=k, status=TIMEOUT, reason=reason) for k in kinds]
    return answer


def summary(rows: Iterable[dict]) -> str:
    """A plain-text table of measured rows: median ms, runs, solver counters and status."""
    from tabulate import tabulate

    rows = list(rows)
    conditional = any(int(r.get(Col.CONTEXT) or 0) for r in rows)  # the context column where one was swept
    table = [
        [
            r[Col.MODEL],
            r[Col.DIM],
            r[Col.OP],
            r[Col.SOLVER],
            r.get(Col.BACKEND, ""),
            r[Col.DEVICE],
            r[Col.BATCH],
            *([r.get(Col.CONTEXT, 0)] if conditional else []),
            f"{float(r[Col.MEDIAN_S]) * 1e3:.3g}"
            if r.get(Col.MEDIAN_S) not in (None, "") and r[Col.STATUS] == OK
            else "",
            r.get(Col.RUNS, ""),
            r.get(Col.EVALUATIONS, ""),
            r[Col.STATUS] if r[Col.STATUS] == OK else f"{r[Col.STATUS]}: {r.get(Col.REASON, '')}",
        ]
        for r in rows
    ]
    headers = [Col.MODEL, "d", Col.OP, Col.SOLVER, Col.BACKEND, Col.DEVICE, Col.BATCH]
    headers += [Col.CONTEXT] * conditional + ["median (ms)", Col.RUNS]
    headers += [Col.EVALUATIONS, Col.STATUS]
    return tabulate(table, headers, tablefmt="github")


def jobs(config: Config) -> list[tuple[str, Config]]:
    """One job per (device, model, op, batch), in grid order: each holds whole series
    along d (the budget extrapolates along its dims as in a direct sweep) and every
    solver of its problem (each checked against the reference in one process)."""
    from .grid import resolve_devices

    devices = [config.device] if config.device != "auto" else resolve_devices("auto")
    seen: dict[tuple, Config] = {}
    for device in devices:
        for model, _dim, op, batch, *_ in (g[1:] for g in grid(replace(config, device="cpu"))):
            key = (device, model, op, batch)
            if key not in seen:
                seen[key] = replace(config, models=(model,), ops=(op,), batches=(batch,), device=device)
    return [(store.slug(f"{d}-{m}-{o}-b{b}"), c) for (d, m, o, b), c in seen.items()]


def _device(config: Config) -> str:
    return config.device


def _validate(config: Config, here: bool) -> None:
    config.validate(here)


TRACK = Track(
    name="sweep", tables=(RESULTS_TABLE,), meta=META, folders=(), jobs=jobs, run=run, device=_device, validate=_validate
)
