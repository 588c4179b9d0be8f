"""Fit flows to data and judge them: ``python -m harness fit``.

Each model is trained on each data set (:mod:`harness.data`) by maximum likelihood with
a fixed seed: Adam (lr 1e-2, as the B-NAF paper; default betas), batches of 256 drawn
with replacement, the
validation NLL every ``eval_every`` steps, the learning rate halved after ``plateau``
evaluations without improvement and training stopped after ``patience`` of them, or at
the step or wall-time budget, whichever comes first. The weights best on validation are
kept, saved as a state dict (``checkpoints/<model>__<data>.pt``, read back with
``weights_only=True``) and judged on the test split: NLL with its standard error, bits
per dimension, the gap to the true entropy where it is known, and the trained model's
``log_prob`` and ``sample`` times (the sweep's timer) with the solver's evaluations.

One row per model x data set goes to ``fit.csv`` as it is finished (the sweep's folder
rules: locked while written, ``--resume`` keeps finished rows, ``--fresh`` moves an old
table aside); the validation curves go to ``curves.csv`` and the 2-D models' density
grids to ``densities/`` for the report's heatmaps.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from . import data as datasets
from . import env, registry, store
from .data import toys
from .errors import UserError
from .measure.call import Settings, measure
from .measure.counting import count_params
from .models import NAMES, op_context, train_step
from .models.base import normal_log_prob
from .ops import LOG_PROB, SAMPLE
from .table import (
    CHECKPOINTS,
    CURVES,
    CURVES_TABLE,
    DENSITIES,
    ERROR,
    FIT_META,
    FIT_TABLE,
    FIT_UNITS,
    OK,
    Col,
    FitRow,
    fit_stem,
)
from .track import Track

DEFAULT_DATA = (*datasets.TOYS, datasets.DIGITS)
EVAL_CHUNK = 4096


@dataclass
class FitConfig:
    """What to fit and how; the budgets bound each fit (one model on one data set)."""

    models: Sequence[str] = NAMES
    data: Sequence[str] = DEFAULT_DATA
    steps: int = 4000
    wall_s: float = 60.0
    batch_size: int = 256
    lr: float = 1e-2
    eval_every: int = 100
    plateau: int = 3
    patience: int = 8
    seed: int = 0
    threads: int = 1
    device: str = "cpu"
    data_dir: str | None = None
    model_config: dict = field(default_factory=dict)
    time_batch: int = 1024  # points per call when the trained model is timed
    time_s: float = 0.3  # minimum timing run per op

    @classmethod
    def quick(cls, **overrides) -> FitConfig:
        """A smoke profile: every model on eight gaussians and digits, 300 steps each."""
        base = dict(
            data=("eight_gaussians", datasets.DIGITS), steps=300, wall_s=8.0, eval_every=50, time_batch=256, time_s=0.05
        )
        return cls(**{**base, **overrides})

    def validate(self, here: bool = True) -> None:
        """Raises a UserError naming a bad setting; ``here`` False leaves the device's
        presence to the machine a job runs on."""
        if not self.models or not self.data:
            raise UserError("name at least one model and one data set")
        bad = [m for m in self.models if not registry.known(m)]
        if bad:
            raise UserError(f"unknown model {bad[0]!r}; allowed: {', '.join(NAMES)}, peers, or module:factory")
        bad = [d for d in self.data if d not in datasets.NAMES]
        if bad:
            raise UserError(f"unknown data set {bad[0]!r}; allowed: {', '.join(datasets.NAMES)}")
        uci = [d for d in self.data if d in datasets.UCI]
        if uci and self.data_dir is None:
            raise UserError(f"{uci[0]} is read from your files: pass --data-dir (see harness.data.uci)")
        for setting in fields(self):  # every int and float setting but the seed is a positive count or amount
            v = getattr(self, setting.name)
            if setting.name == "seed":
                if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                    raise UserError(f"seed must be an int >= 0, got {v!r}")
                continue
            if setting.type == "int" and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise UserError(f"{setting.name} must be an int >= 1, got {v!r}")
            if setting.type == "float" and not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise UserError(f"{setting.name} must be a finite number > 0, got {v!r}")
        if self.device not in ("cpu", "cuda"):
            raise UserError(f"unknown device {self.device!r}; allowed: cpu, cuda")
        if here and self.device == "cuda" and not torch.cuda.is_available():
            raise UserError(f"device {self.device!r} is not available here; present: cpu")


class NonFinite(ValueError):
    """The loss or a test NLL is not finite: the fit cannot be trusted."""


def nll_per_point(flow, x: Tensor) -> Tensor:
    """-log_prob of each row of x, in chunks, without gradients (float64 out)."""
    with op_context(flow, LOG_PROB):
        return torch.cat([-flow.log_prob(chunk).double() for chunk in x.split(EVAL_CHUNK)])


def baseline_nll(ds: datasets.Dataset) -> float:
    """The standard normal's test NLL in the data set's units."""
    return float(-normal_log_prob(ds.test.double()).mean()) + ds.nll_offset


@dataclass
class Trained:
    """What training left: the best weights' step, the steps taken and why it stopped."""

    steps: int
    best_step: int
    stopped: str
    train_s: float
    step_s: float
    val_nll: float
    curve: list[dict]


def train(flow, ds: datasets.Dataset, config: FitConfig, on_eval=None) -> Trained:
    """Trains ``flow`` in place on ``ds.train`` (see the module's schedule); leaves the
    best weights on validation in ``flow``. Raises :class:`NonFinite` on a non-finite loss."""
    g = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(flow.parameters(), lr=config.lr)
    best, best_step, best_state, bad = math.inf, 0, copy.deepcopy(flow.state_dict()), 0
    curve, step_times, running = [], [], []
    start = time.perf_counter()
    stopped = "step budget"
    flow.train()
    for step in range(1, config.steps + 1):
        x = ds.train[torch.randint(len(ds.train), (config.batch_size,), generator=g)].to(config.device)
        t0 = time.perf_counter()
        loss = train_step(flow, optimizer, x)
        step_times.append(time.perf_counter() - t0)
        if not torch.isfinite(loss):
            raise NonFinite(f"non-finite training loss at step {step} (lr {optimizer.param_groups[0]['lr']:g})")
        running.append(float(loss))
        elapsed = time.perf_counter() - start
        last = step == config.steps or elapsed > config.wall_s
        if step % config.eval_every == 0 or last:
            flow.eval()
            val = float(nll_per_point(flow, ds.val.to(config.device)).mean())
            if not math.isfinite(val):  # never kept as a best, never reported
                raise NonFinite(f"non-finite validation NLL at step {step}")
            flow.train()
            lr = optimizer.param_groups[0]["lr"]
            curve.append(
                {
                    Col.STEP: step,
                    Col.WALL_S: elapsed,
                    Col.TRAIN_NLL: sum(running) / len(running),
                    Col.VAL_NLL: val,
                    Col.LEARNING_RATE: lr,
                }
            )
            running = []
            if on_eval is not None:
                on_eval(step, val)
            if val < best - 1e-4:
                best, best_step, best_state, bad = val, step, copy.deepcopy(flow.state_dict()), 0
            else:
                bad += 1
                if bad % config.plateau == 0:
                    for group in optimizer.param_groups:
                        group["lr"] = lr / 2
                if bad >= config.patience:
                    stopped = "early stop"
                    break
            if elapsed > config.wall_s:
                stopped = "wall budget"
                break
    flow.load_state_dict(best_state)
    flow.eval()
    return Trained(
        steps=step,
        best_step=best_step,
        stopped=stopped,
        train_s=time.perf_counter() - start,
        step_s=float(np.median(step_times)),
        val_nll=best,
        curve=curve,
    )


def fit_one(name: str, ds: datasets.Dataset, config: FitConfig, out: Path, on_eval=None) -> tuple[dict, list[dict]]:
    """Trains and judges ``name`` on ``ds``; returns its row's measured columns and its curve."""
    torch.manual_seed(config.seed)
    flow = registry.build_any(name, ds.dim, **config.model_config).to(config.device)
    stored, effective = count_params(flow, flow.masks())
    trained = train(flow, ds, config, on_eval)
    per_point = nll_per_point(flow, ds.test.to(config.device)) + ds.nll_offset
    if not bool(torch.isfinite(per_point).all()):
        bad = int((~torch.isfinite(per_point)).sum())
        raise NonFinite(f"test NLL not finite at {bad} of {len(per_point)} points")
    nll = float(per_point.mean())
    se = float(per_point.std() / math.sqrt(len(per_point)))
    file = out / CHECKPOINTS / f"{fit_stem(name, ds.name)}.pt"
    file.parent.mkdir(exist_ok=True)
    torch.save(flow.state_dict(), file)
    row: dict = dict(
        params_stored=stored,
        params_effective=effective,
        steps=trained.steps,
        best_step=trained.best_step,
        stopped=trained.stopped,
        train_s=trained.train_s,
        step_s=trained.step_s,
        test_nll=nll,
        test_nll_se=se,
        val_nll=trained.val_nll + ds.nll_offset,
        bits_per_dim=ds.bits_per_dim(nll),
        baseline_nll=baseline_nll(ds),
        nll_units=ds.units,
        solver=flow.solver,
        checkpoint=str(file.relative_to(out)),
    )
    if ds.entropy is not None:
        row.update(entropy=ds.entropy, gap=nll - ds.entropy)
    if ds.dim == 2 and ds.name in toys.TOYS:
        grid = toys.density_grid(lambda x: flow.log_prob(x.float().to(config.device)).cpu(), toys.TOYS[ds.name].extent)
        (out / DENSITIES).mkdir(exist_ok=True)
        np.save(out / DENSITIES / f"{fit_stem(name, ds.name)}.npy", grid)
    row.update(time_trained(flow, config))
    return row, trained.curve


def time_trained(flow, config: FitConfig) -> dict:
    """The trained model's log_prob and sample times (the sweep's measuring of one
    configuration: median of repeated calls on a batch of ``time_batch``), and the
    solver's evaluations per dimension."""
    timing = Settings(config.threads, budget_s=60.0, min_run_time=config.time_s, flops=False, memory=False)
    timing = replace(timing, seed=config.seed)
    out: dict = {}
    for op, column in ((LOG_PROB, Col.TRAINED_LOG_PROB_S), (SAMPLE, Col.TRAINED_SAMPLE_S)):
        if op in flow.unsupported:
            continue
        measured, _ = measure(flow, op, config.device, config.time_batch, timing, None, essential=True)
        if measured.get(Col.STATUS) == OK:
            out[column] = measured[Col.MEDIAN_S]
            if op == SAMPLE and measured.get(Col.EVALUATIONS_PER_DIM) is not None:
                out[Col.EVALUATIONS_PER_DIM] = measured[Col.EVALUATIONS_PER_DIM]
    return out


def truth_grids(data: Sequence[str], out: Path) -> None:
    """The true log-densities of the toys fitted, beside the models' (``truth__<toy>.npy``)."""
    for name in data:
        if name in toys.TOYS:
            toy = toys.TOYS[name]
            (out / DENSITIES).mkdir(exist_ok=True)
            np.save(out / DENSITIES / f"{fit_stem('truth', name)}.npy", toys.density_grid(toy.log_density, toy.extent))


def metadata(new: bool = True) -> dict:
    """The environment of a fit, with the units of its columns."""
    return {**env.environment(), "units": FIT_UNITS}


def run(config: FitConfig, out: Path, resume: bool = False, fresh: bool = False, progress: bool = True) -> list[dict]:
    """Fits every model on every data set into ``out``; returns the rows written now.
    A fit that fails (a non-finite loss, a model that cannot be built, any exception of
    a user's flow) is an ``error`` row with the reason, and the others go on.

    The folder follows :mod:`harness.store`'s rules; ``--resume`` keeps the finished
    fits (their curves too) and fits the rest again, ``--fresh`` moves everything aside
    (table, curves, checkpoints, density grids)."""
    from tqdm.auto import tqdm

    config.validate()
    torch.set_num_threads(config.threads)
    out = Path(out)
    settings = json.loads(json.dumps(asdict(config)))
    todo = [(d, m) for d in config.data for m in config.models]
    folder = store.Run(
        out,
        FIT_TABLE,
        what="fit",
        meta_name=FIT_META,
        config=settings,
        meta=metadata,
        resume=resume,
        fresh=fresh,
        doing=f"fitting {len(todo)} models x data sets",
    )
    with folder:
        done = {tuple(r[k] for k in FIT_TABLE.key) for r in folder.rows if r[Col.STATUS] == OK}
        if len(folder.rows) != len(done):  # failed rows are fitted again: keep only the finished ones
            folder.keep_only([r for r in folder.rows if r[Col.STATUS] == OK])
        curves = _curves(out, done)
        todo = [(d, m) for d, m in todo if (m, d) not in done]
        commit, rows = env.git_commit(), []
        truth_grids(config.data, out)
        bar = tqdm(todo, desc="fit", unit="fit", disable=not progress, dynamic_ncols=True)
        loaded: dict[str, datasets.Dataset] = {}
        try:
            for data_name, model in bar:
                if data_name not in loaded:
                    loaded.clear()
                    loaded[data_name] = datasets.load(data_name, config.seed, config.data_dir)
                ds = loaded[data_name]
                family, library = registry.identity(model)
                row: FitRow = dict(
                    model=model,
                    family=family,
                    library=library,
                    data=data_name,
                    dim=ds.dim,
                    seed=config.seed,
                    threads=config.threads,
                    commit=commit,
                    machine=env.machine_name(config.device),
                )  # type: ignore[typeddict-item]

                def show(step: int, val: float, model=model, data_name=data_name) -> None:
                    bar.set_postfix_str(f"{model} on {data_name}: step {step}, val NLL {val:.3f}")

                try:
                    measured, curve = fit_one(model, ds, config, out, on_eval=show)
                    row.update(measured, status=OK, reason="")  # type: ignore[typeddict-item]
                    # the curve before the row: a kill between them leaves a curve that resume drops
                    curves.write_all([{Col.MODEL: model, Col.DATA: data_name, **c} for c in curve])
                except Exception as e:  # a fit that failed is a row, and the others go on
                    row.update(status=ERROR, reason=f"{type(e).__name__}: {e}".replace("\n", " ")[:300])
                folder.write(row)
                rows.append(row)
        finally:
            bar.close()
            curves.close()
    return rows


def _curves(out: Path, done: set[tuple]) -> store.Appender:
    """curves.csv open for appending, holding only the curves of the fits ``done``
    (those of a fit cut short are dropped: it is fitted again)."""
    path = out / CURVES
    if not path.exists() or not done:
        return store.Appender(path, CURVES_TABLE.columns, new=True)
    store.repair(path)
    kept = [r for r in store.read_table(path, CURVES_TABLE.columns) if (r[Col.MODEL], r[Col.DATA]) in done]
    store.write_table(path, kept, CURVES_TABLE.columns)
    return store.Appender(path, CURVES_TABLE.columns, new=False)


def summary(rows: Sequence[dict]) -> str:
    from tabulate import tabulate

    def num(v, fmt: str) -> str:
        return "" if v in (None, "") else format(float(v), fmt)

    table = [
        [
            r[Col.MODEL],
            r[Col.DATA],
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
    headers = [Col.MODEL, Col.DATA, "test NLL", "se", "gap to entropy", "N(0, I) NLL", Col.STEPS, "train s", Col.STATUS]
    return tabulate(table, headers, tablefmt="github")


def jobs(config: FitConfig) -> list[tuple[str, FitConfig]]:
    """One job per (data set, model)."""
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
    tables=(FIT_TABLE, CURVES_TABLE),
    meta=FIT_META,
    folders=(CHECKPOINTS, DENSITIES),
    jobs=jobs,
    run=run,
    device=_device,
    validate=_validate,
)
