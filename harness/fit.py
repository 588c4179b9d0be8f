"""Fit flows to data and judge them: ``python -m harness fit``.

Every model is trained on every data set (:mod:`harness.data`) with every seed (the
seeds are an axis: weights, batches and a toy's samples), one fit at a time in a worker
process killed at the fit's deadline, by :mod:`harness.training`. One row per model,
data set and seed goes to ``fit.csv`` as it is finished, kept by :mod:`harness.store`'s
rules (locked, ``--resume`` keeps finished fits and fits the rest, ``--fresh`` moves
everything aside); the validation curves go to ``curves.csv``, each test point's NLL to
``nll/`` (for paired comparisons in the report), checkpoints to ``checkpoints/`` and
the 2-D density grids to ``densities/``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch

from . import data as datasets
from . import env, registry, store
from .errors import UserError
from .models import NAMES
from .table import (
    CHECKPOINTS,
    CURVES_TABLE,
    DENSITIES,
    ERROR,
    FIT_META,
    FIT_TABLE,
    FIT_UNITS,
    NLL,
    OK,
    POSTERIOR_TABLE,
    SMOKE,
    TIMEOUT,
    Col,
    FitRow,
    TableSpec,
)
from .track import Track
from .training import Fitter, Job, fit_one, truth_grids

DEFAULT_DATA = (*datasets.TOYS, datasets.DIGITS)


@dataclass
class FitConfig:
    """What to fit and how; the budgets bound each fit (one model on one data set with
    one seed)."""

    models: Sequence[str] = NAMES
    data: Sequence[str] = DEFAULT_DATA
    seeds: Sequence[int] = (0, 1, 2)
    steps: int = 4000
    wall_s: float = 30.0
    batch_size: int = 256
    lr: float = 1e-2
    eval_every: int = 100
    plateau: int = 3
    patience: int = 8
    threads: int = 1
    device: str = "cpu"
    data_dir: str | None = None
    model_config: dict = field(default_factory=dict)
    time_batch: int = 1024  # points per call when the trained model is timed
    time_s: float = 0.3  # minimum timing run per op
    quick: bool = False  # a smoke test: say so wherever its results are shown
    isolate: bool = True  # each fit in a worker killed at its deadline
    deadline_margin_s: float = 180.0  # beyond twice the wall budget: judging, saving, timing

    @classmethod
    def quick_profile(cls, **overrides) -> FitConfig:
        """A smoke test: every model on eight gaussians and digits, one seed, 300 steps
        or 8 s each. Its results are labelled as such: too short to judge quality."""
        base = dict(data=("eight_gaussians", datasets.DIGITS), seeds=(0,), steps=300, wall_s=8.0, eval_every=50)
        return cls(**{**base, "time_batch": 256, "time_s": 0.05, "quick": True, **overrides})

    @property
    def deadline_s(self) -> float:
        """Seconds one fit may take before its worker is killed: twice the wall budget,
        and three minutes for judging, saving and timing the trained model."""
        return 2 * self.wall_s + self.deadline_margin_s

    def validate(self, here: bool = True) -> None:
        """Raises a UserError naming a bad setting; ``here`` False leaves the device's
        presence to the machine a job runs on."""
        if not self.models or not self.data or not self.seeds:
            raise UserError("name at least one model, one data set and one seed")
        bad = [m for m in self.models if not registry.known(m)]
        if bad:
            raise UserError(f"unknown model {bad[0]!r}; allowed: {', '.join(NAMES)}, peers, or module:factory")
        for m in self.models:
            registry.importable(m)
            if m in NAMES:  # a reference model's settings, before anything is trained (one line, exit 2)
                registry.check_config(m, self.model_config)
        bad = [d for d in self.data if d not in datasets.NAMES]
        if bad:
            raise UserError(f"unknown data set {bad[0]!r}; allowed: {', '.join(datasets.NAMES)}")
        uci = [d for d in self.data if d in datasets.UCI]
        if uci and self.data_dir is None:
            raise UserError(f"{uci[0]} is read from your files: pass --data-dir (see harness.data.uci)")
        for s in self.seeds:
            if not isinstance(s, int) or isinstance(s, bool) or s < 0:
                raise UserError(f"seeds must be ints >= 0, got {s!r}")
        for setting in fields(self):  # every int and float setting is a positive count or amount
            v = getattr(self, setting.name)
            if setting.type == "int" and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise UserError(f"{setting.name} must be an int >= 1, got {v!r}")
            if setting.type == "float" and not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise UserError(f"{setting.name} must be a finite number > 0, got {v!r}")
        if self.device not in ("cpu", "cuda"):
            raise UserError(f"unknown device {self.device!r}; allowed: cpu, cuda")
        if here and self.device == "cuda" and not torch.cuda.is_available():
            raise UserError(f"device {self.device!r} is not available here; present: cpu")


def metadata(new: bool = True) -> dict:
    """The environment of a fit, with the units of its columns."""
    return {**env.environment(), "units": FIT_UNITS}


def run(config: FitConfig, out: Path, resume: bool = False, fresh: bool = False, progress: bool = True) -> list[dict]:
    """Fits every model on every data set with every seed into ``out``; returns the rows
    written now. A fit that fails (a non-finite loss, a model that cannot be built, any
    exception of a user's flow) is an ``error`` row, one that outlives its deadline a
    ``timeout`` row, and the others go on."""
    from tqdm.auto import tqdm

    from .worker import Worker, WorkerDied

    config.validate()
    for name in config.data:  # the user's files, read once here: a malformed one is a one-line error now
        if name in datasets.UCI:
            datasets.load(name, config.seeds[0], config.data_dir)
    torch.set_num_threads(config.threads)
    out = Path(out)
    settings = json.loads(json.dumps(asdict(config)))
    todo = [(d, m, s) for d in config.data for s in config.seeds for m in config.models]
    folder = store.Run(
        out,
        FIT_TABLE,
        what="fit",
        meta_name=FIT_META,
        config=settings,
        meta=metadata,
        resume=resume,
        fresh=fresh,
        doing=f"fitting {len(todo)} models x data sets x seeds",
    )
    with folder:
        done = {tuple(r[k] for k in FIT_TABLE.key) for r in folder.rows if r[Col.STATUS] == OK}
        if len(folder.rows) != len(done):  # failed rows are fitted again: keep only the finished ones
            folder.keep_only([r for r in folder.rows if r[Col.STATUS] == OK])
        curves, posterior = _side(out, CURVES_TABLE, done), _side(out, POSTERIOR_TABLE, done)
        todo = [(d, m, s) for d, m, s in todo if (m, d, str(s)) not in done]
        commit, rows = env.git_commit(), []
        truth_grids(config.data, out)
        worker = Worker(Fitter) if config.isolate else None
        local = Fitter() if worker is None else None
        bar = tqdm(todo, desc="fit", unit="fit", disable=not progress, dynamic_ncols=True)
        try:
            for data_name, model, seed in bar:
                bar.set_postfix_str(f"{model} on {data_name}, seed {seed}")
                family, library = registry.identity_or_module(model)
                row: FitRow = dict(model=model, family=family, library=library, data=data_name, seed=seed)
                row.update(threads=config.threads, commit=commit, machine=env.machine_name(config.device))
                job = Job(model, data_name, seed, config, str(out))
                try:
                    answer = local(job) if worker is None else worker.run(job, config.deadline_s)
                except WorkerDied as e:
                    answer = None, str(e)
                if answer is None:
                    reason = f"killed after {config.deadline_s:g} s (wall budget {config.wall_s:g} s)"
                    row.update(status=TIMEOUT, reason=reason)
                elif answer[0] is None:
                    row.update(status=ERROR, reason=answer[1])
                else:
                    measured, curve, observations = answer
                    row.update(measured, status=OK, reason="")
                    # the side rows before the row: a kill between them leaves rows that resume drops
                    fit_key = {Col.MODEL: model, Col.DATA: data_name, Col.SEED: seed}
                    curves.write_all([{**fit_key, **c} for c in curve])
                    posterior.write_all([{**fit_key, **o} for o in observations])
                folder.write(row)
                rows.append(row)
        finally:
            if worker is not None:
                worker.close()
            bar.close()
            curves.close()
            posterior.close()
    return rows


def _side(out: Path, spec: TableSpec, done: set[tuple]) -> store.Appender:
    """A side table of the fits (curves.csv, posterior.csv) open for appending, holding
    only the rows of the fits ``done`` (those of a fit cut short are dropped: it is
    fitted again)."""
    path = out / spec.name
    if not path.exists() or not done:
        return store.Appender(path, spec.columns, new=True)
    store.repair(path)
    keep = {(m, d, s) for m, d, s in done}
    kept = [r for r in store.read_table(path, spec.columns) if (r[Col.MODEL], r[Col.DATA], r[Col.SEED]) in keep]
    store.write_table(path, kept, spec.columns)
    return store.Appender(path, spec.columns, new=False)


def summary(rows: Sequence[dict]) -> str:
    from tabulate import tabulate

    def num(v, fmt: str) -> str:
        return "" if v in (None, "") else format(float(v), fmt)

    table = [
        [
            r[Col.MODEL],
            r[Col.DATA],
            r.get(Col.SEED, ""),
            num(r.get(Col.TEST_NLL), ".3f"),
            num(r.get(Col.TEST_NLL_SE), ".3f"),
            num(r.get(Col.GAP), ".3f"),
            num(r.get(Col.BASELINE_NLL), ".3f"),
            r.get(Col.STEPS, ""),
            num(r.get(Col.TRAIN_S), ".1f"),
            r[Col.STATUS] if r[Col.STATUS] == OK else f"{r[Col.STATUS]}: {r.get(Col.REASON, '')}",
        ]
        for r in rows
    ]
    headers = [Col.MODEL, Col.DATA, Col.SEED, "test NLL", "se", "gap to entropy", "N(0, I) NLL", Col.STEPS]
    return tabulate(table, [*headers, "train s", Col.STATUS], tablefmt="github")


def jobs(config: FitConfig) -> list[tuple[str, FitConfig]]:
    """One job per (data set, model), its seeds in it."""
    return [
        (store.slug(f"fit-{m}-{d}"), replace(config, models=(m,), data=(d,)))
        for d in config.data
        for m in config.models
    ]


def _device(config: FitConfig) -> str:
    return config.device


def _validate(config: FitConfig, here: bool) -> None:
    config.validate(here)


TRACK = Track(
    name="fit",
    tables=(FIT_TABLE, CURVES_TABLE, POSTERIOR_TABLE),
    meta=FIT_META,
    folders=(CHECKPOINTS, DENSITIES, NLL),
    jobs=jobs,
    run=run,
    device=_device,
    validate=_validate,
)

__all__ = ["SMOKE", "TRACK", "FitConfig", "fit_one", "run", "summary"]
