"""One fit: a flow trained by maximum likelihood on a data set with one seed, and judged.

Adam (lr 1e-2, as the B-NAF paper; default betas), batches of 256 drawn with
replacement, the validation NLL every ``eval_every`` steps, the learning rate halved
after ``plateau`` evaluations without improvement and training stopped after
``patience`` of them, or at the step or wall-time budget. The weights best on
validation are kept and judged on the test split: NLL with its standard error, the
same on validation (so a disagreement of the two is seen), bits per dimension, the gap
to the true entropy paired on the same test points where the truth is known
(mean(log p(x) - log q(x)) with its standard error), each test point's NLL (kept for
paired comparisons between flows), and the trained model's ``log_prob`` and ``sample``
times. Every NLL is in the data set's own units (nats per point, or per image).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from . import data as datasets
from . import registry
from .data import toys
from .measure.call import Settings, measure
from .measure.counting import count_params
from .models import op_context, train_step
from .models.base import normal_log_prob
from .ops import LOG_PROB, SAMPLE
from .table import CHECKPOINTS, DENSITIES, NLL, OK, Col, fit_stem

EVAL_CHUNK = 4096
DISAGREE = 3.0  # validation and test NLL disagree when further apart than this many joint SEs


class NonFinite(ValueError):
    """The loss or a test NLL is not finite, or there is nothing to judge on: the fit
    cannot be trusted."""


def nll_per_point(flow, x: Tensor, context: Tensor | None = None) -> Tensor:
    """-log_prob of each row of x (given its row of ``context``, for a conditional flow),
    in chunks, without gradients (float64 out)."""
    with op_context(flow, LOG_PROB):
        if context is None:
            return torch.cat([-flow.log_prob(chunk).double() for chunk in x.split(EVAL_CHUNK)])
        pairs = zip(x.split(EVAL_CHUNK), context.split(EVAL_CHUNK))
        return torch.cat([-flow.log_prob(chunk, c).double() for chunk, c in pairs])


def baseline_nll(ds: datasets.Dataset) -> float:
    """The standard normal's test NLL in the data set's units."""
    return float(-normal_log_prob(ds.test.double()).mean()) + ds.nll_offset


def mean_se(values: Tensor) -> tuple[float, float]:
    return float(values.mean()), float(values.std() / math.sqrt(len(values))) if len(values) > 1 else math.nan


@dataclass
class Trained:
    """What training left: the best weights' step, the steps taken and why it stopped."""

    steps: int
    best_step: int
    stopped: str
    train_s: float
    step_s: float
    curve: list[dict]


def train(flow, ds: datasets.Dataset, config, seed: int, on_eval=None) -> Trained:
    """Trains ``flow`` in place on ``ds.train`` (see the module's schedule), batches drawn
    with ``seed``; leaves the best weights on validation in ``flow``. Raises
    :class:`NonFinite` on a non-finite loss or validation NLL."""
    g = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(flow.parameters(), lr=config.lr)
    best, best_step, best_state, bad = math.inf, 0, copy.deepcopy(flow.state_dict()), 0
    curve, step_times, running = [], [], []
    start = time.perf_counter()
    stopped = "step budget"
    flow.train()
    contexts = [None] * 3 if ds.contexts is None else [c.to(config.device) for c in ds.contexts]
    for step in range(1, config.steps + 1):
        rows = torch.randint(len(ds.train), (config.batch_size,), generator=g)
        x, c = ds.train[rows].to(config.device), None if contexts[0] is None else contexts[0][rows]
        t0 = time.perf_counter()
        loss = train_step(flow, optimizer, x, c)
        step_times.append(time.perf_counter() - t0)
        if not torch.isfinite(loss):
            raise NonFinite(f"non-finite training loss at step {step} (lr {optimizer.param_groups[0]['lr']:g})")
        running.append(float(loss))
        elapsed = time.perf_counter() - start
        last = step == config.steps or elapsed > config.wall_s
        if step % config.eval_every == 0 or last:
            flow.eval()
            val = float(nll_per_point(flow, ds.val.to(config.device), contexts[1]).mean())
            if not math.isfinite(val):  # never kept as a best, never reported
                raise NonFinite(f"non-finite validation NLL at step {step}")
            flow.train()
            lr = optimizer.param_groups[0]["lr"]
            curve.append(
                {
                    Col.STEP: step,
                    Col.WALL_S: elapsed,
                    Col.TRAIN_NLL: sum(running) / len(running) + ds.nll_offset,
                    Col.VAL_NLL: val + ds.nll_offset,
                    Col.LEARNING_RATE: lr,
                }
            )
            running = []
            if on_eval is not None:
                on_eval(step, val + ds.nll_offset)
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
    return Trained(step, best_step, stopped, time.perf_counter() - start, float(np.median(step_times)), curve)


def _judged(flow, x: Tensor, context: Tensor | None, ds: datasets.Dataset, device: str, split: str) -> Tensor:
    if len(x) == 0:
        raise NonFinite(f"the {split} split of {ds.name} is empty: nothing to judge the fit on")
    per_point = nll_per_point(flow, x.to(device), None if context is None else context.to(device)) + ds.nll_offset
    if not bool(torch.isfinite(per_point).all()):
        bad = int((~torch.isfinite(per_point)).sum())
        raise NonFinite(f"{split} NLL not finite at {bad} of {len(per_point)} points")
    return per_point


def fit_one(
    name: str, ds: datasets.Dataset, config, seed: int, out: Path, on_eval=None
) -> tuple[dict, list[dict], list[dict]]:
    """Trains ``name`` on ``ds`` with ``seed`` (weights and batches) and judges it; returns
    its row's measured columns, its curve and, for a conditional task, its judgement at
    each fixed observation. Files go under ``out``: the checkpoint, the test points'
    NLLs, and for a 2-D toy of seed 0 the density grid."""
    torch.manual_seed(seed)
    given = {} if ds.contexts is None else {"context": ds.context_features}
    flow = registry.build_any(name, ds.dim, **config.model_config, **given).to(config.device)
    stored, effective = count_params(flow, flow.masks())
    trained = train(flow, ds, config, seed, on_eval)
    _, val_context, test_context = ds.contexts or (None, None, None)
    test = _judged(flow, ds.test, test_context, ds, config.device, "test")
    val = _judged(flow, ds.val, val_context, ds, config.device, "validation")
    (nll, se), (val_nll, val_se) = mean_se(test), mean_se(val)
    stem = f"{fit_stem(name, ds.name)}__s{seed}"
    file = out / CHECKPOINTS / f"{stem}.pt"
    file.parent.mkdir(exist_ok=True)
    save_whole(file, lambda f: torch.save(flow.state_dict(), f))
    points = out / NLL / f"{stem}.npy"
    points.parent.mkdir(exist_ok=True)
    save_whole(points, lambda f: np.save(f, test.float().cpu().numpy()))
    baseline = baseline_nll(ds)
    row: dict = dict(
        dim=ds.dim,
        params_stored=stored,
        params_effective=effective,
        steps=trained.steps,
        best_step=trained.best_step,
        stopped=trained.stopped,
        train_s=trained.train_s,
        step_s=trained.step_s,
        test_nll=nll,
        test_nll_se=se,
        val_nll=val_nll,
        val_nll_se=val_se,
        bits_per_dim=ds.bits_per_dim(nll),
        baseline_nll=baseline,
        worse_than_baseline=nll > baseline,
        val_test_disagree=abs(val_nll - nll) > DISAGREE * math.hypot(se, val_se),
        nll_units=ds.units,
        solver=flow.solver,
        checkpoint=str(file.relative_to(out)),
        nll_file=str(points.relative_to(out)),
    )
    per_observation = []
    if ds.truth is not None:  # the gap paired on the same points: mean(log p - log q)
        truth = ds.true_log_density().to(test)
        gap, gap_se = mean_se(test + truth)
        row.update(entropy=ds.entropy, gap=gap, gap_se=gap_se)
        if ds.observation is not None:
            per_observation = judged_per_observation(test, truth, ds.observation)
    if ds.dim == 2 and ds.name in toys.TOYS and seed == min(config.seeds):
        grid = toys.density_grid(lambda x: flow.log_prob(x.float().to(config.device)).cpu(), toys.TOYS[ds.name].extent)
        (out / DENSITIES).mkdir(exist_ok=True)
        save_whole(out / DENSITIES / f"{fit_stem(name, ds.name)}.npy", lambda f: np.save(f, grid))
    row.update(time_trained(flow, config, seed, ds.context_features))
    return row, trained.curve, per_observation


def judged_per_observation(nll: Tensor, truth: Tensor, observation: Tensor) -> list[dict]:
    """A conditional fit at each fixed observation: the mean NLL of its posterior draws
    and the gap mean(log p - log q) with its standard error."""
    out = []
    for k in observation.unique().tolist():
        at = observation == k
        (nll_k, _), (gap, gap_se) = mean_se(nll[at]), mean_se(nll[at] + truth[at])
        judged = {Col.TEST_NLL: nll_k, Col.GAP: gap, Col.GAP_SE: gap_se}
        out.append({Col.OBSERVATION: k, Col.POINTS: int(at.sum()), **judged})
    return out


def time_trained(flow, config, seed: int, context: int = 0) -> dict:
    """The trained model's log_prob and sample times (harness.measure.call.measure on a
    batch of ``time_batch``), and the solver's evaluations per dimension."""
    timing = Settings(config.threads, budget_s=60.0, min_run_time=config.time_s, flops=False, memory=False, seed=seed)
    out: dict = {}
    for op, column in ((LOG_PROB, Col.TRAINED_LOG_PROB_S), (SAMPLE, Col.TRAINED_SAMPLE_S)):
        if op in flow.unsupported:
            continue
        measured, _ = measure(flow, op, config.device, config.time_batch, timing, None, True, context=context)
        if measured.get(Col.STATUS) == OK:
            out[column] = measured[Col.MEDIAN_S]
            if op == SAMPLE and measured.get(Col.EVALUATIONS_PER_DIM) is not None:
                out[Col.EVALUATIONS_PER_DIM] = measured[Col.EVALUATIONS_PER_DIM]
    return out


def save_whole(path: Path, write) -> None:
    """``write(file)`` into ``path`` whole or not at all (a kill never leaves a torn
    .npy or .pt for the report to fail on; harness.records.write_bytes)."""
    import io

    from .records import write_bytes

    buffer = io.BytesIO()
    write(buffer)
    write_bytes(path, buffer.getvalue())


def truth_grids(data, out: Path) -> None:
    """The true log-densities of the toys fitted, beside the models' (``truth__<toy>.npy``)."""
    for name in data:
        if name in toys.TOYS:
            toy = toys.TOYS[name]
            (out / DENSITIES).mkdir(exist_ok=True)
            grid = toys.density_grid(toy.log_density, toy.extent)
            save_whole(out / DENSITIES / f"{fit_stem('truth', name)}.npy", lambda f, grid=grid: np.save(f, grid))


@dataclass(frozen=True)
class Job:
    """One fit for a worker."""

    model: str
    data: str
    seed: int
    config: object
    out: str


class Fitter:
    """The worker's handler: loads data sets (one kept at a time) and fits; a failure of
    any kind is returned as ``(None, reason)``."""

    def __init__(self) -> None:
        self.loaded: dict[tuple, datasets.Dataset] = {}

    def __call__(self, job: Job) -> tuple[dict, list[dict], list[dict]] | tuple[None, str]:
        key = (job.data, job.seed, job.config.data_dir)
        try:
            if key not in self.loaded:
                self.loaded.clear()
                self.loaded[key] = datasets.load(job.data, job.seed, job.config.data_dir)
            torch.set_num_threads(job.config.threads)
            return fit_one(job.model, self.loaded[key], job.config, job.seed, Path(job.out))
        except Exception as e:  # a user's flow, or a data file, may raise anything: the fit is an error row
            return None, f"{type(e).__name__}: {e}".replace("\n", " ")[:300]
