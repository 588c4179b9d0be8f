"""The sweep's measuring side: builds each unit's models and measures them, in the
worker process (harness.worker) or in-process with ``isolate=False``.

A unit is one (device, d, batch): first the configurations timed alone (solvers other
than each family's default, each with its deviation from the reference solver's
output), then the default algorithms of every flow together, in interleaved rounds
(harness.measure.call.measure_together), so that the ratio of any two of them is
paired by round."""

from __future__ import annotations

import torch

from . import registry
from .grid import Config, Probe, Task, Unit
from .measure import allocator
from .measure.call import Prepared, count_all, is_oom, measure, measure_together, one_line, prepare
from .measure.counting import count_params
from .measure.stats import relative_deviation
from .models import TRAIN_STEP
from .models.solvers import DIRECT, NATIVE
from .table import ERROR, OOM, SKIPPED, Col


class Measurer:
    """Measures units one after another, keeping the models of the current unit and
    the reference solver's output of each of its problems."""

    def __init__(self, config: Config):
        self.config = config
        allocator.tune()  # in the measuring process, before any buffer
        self.built: dict[tuple, tuple] = {}  # (device, model, dim, solver, backend) -> (flow, (stored, effective))
        self.reference_out: dict[tuple, object] = {}
        self.ready: dict[
            tuple, tuple[Prepared, dict]
        ] = {}  # (model, op, solver, backend) -> prepared for the rounds, with their columns
        self.unit: tuple | None = None

    def __call__(self, task: Unit | Probe) -> list[dict] | registry.Identity | str:
        if isinstance(task, Probe):
            return probe(task.model)
        if (task.device, task.dim, task.batch) != self.unit:  # the models of one unit in memory at a time
            self.built.clear()
            self.reference_out.clear()
            self.ready.clear()
            self.unit = (task.device, task.dim, task.batch)
        if task.prepare_only:
            return [self.prepare(t) for t in task.together]
        rows = [self._guarded(t, self.alone) for t in task.alone]
        return rows + self.together(task)

    def _guarded(self, task: Task, how) -> dict:
        try:
            return how(task)
        except Exception as e:  # record, and go on with the sweep
            if task.device == "cuda":
                torch.cuda.empty_cache()
            return dict(status=OOM if is_oom(e) else ERROR, reason=one_line(e))

    def _model(self, task: Task) -> tuple[object, dict]:
        # a flow per backend (each its own switch) and context size
        key = (task.device, task.model, task.dim, task.solver, task.backend, task.context)
        if key not in self.built:
            torch.manual_seed(self.config.seed)  # the same weights whatever the solver
            solver = {} if task.solver in (DIRECT, NATIVE) else {"solver": task.solver}
            if task.context:
                solver["context"] = task.context
            flow = registry.build_any(task.model, task.dim, **self.config.model_config, **solver)
            flow = flow.to(task.device).eval()
            self.built[key] = (flow, count_params(flow, flow.masks()))
        flow, (stored, effective) = self.built[key]
        return flow, dict(kind=flow.cost[task.op], params_stored=stored, params_effective=effective)

    def _not_measured(self, flow, task: Task, row: dict) -> dict | None:
        # a training step is log_prob's gradient: it goes where log_prob goes (and a flow
        # may have no training step of its own: a JAX flow's gradient is not torch's)
        cannot = flow.unsupported.get(task.op) or (flow.unsupported.get("log_prob") if task.op == TRAIN_STEP else "")
        if cannot:
            return dict(row, status=SKIPPED, reason=cannot)
        if task.skip:
            return dict(row, status=SKIPPED, reason=task.skip)
        return None

    def _deviation(self, flow, task: Task, out: object, row: dict) -> None:
        problem = (task.device, task.model, task.dim, task.op, task.batch, task.context)
        if out is not None and task.solver == flow.reference_solver:
            self.reference_out[problem] = out
        elif out is not None and problem in self.reference_out:
            row[Col.MAX_REL_DEV] = relative_deviation(out, self.reference_out[problem])

    def _arguments(self, flow, task: Task) -> tuple:
        """What measuring or preparing a task takes, in order (harness.measure.call)."""
        settings = self.config.measuring
        task_settings = (task.estimate, task.essential, task.backend, task.context)
        return flow, task.op, task.device, task.batch, settings, *task_settings

    def alone(self, task: Task) -> dict:
        flow, row = self._model(task)
        final = self._not_measured(flow, task, row)
        if final is not None:
            return final
        measured, out = measure(*self._arguments(flow, task), counts=task.counts)
        row.update(measured)
        self._deviation(flow, task, out, row)
        return said_changed(flow, row)

    def prepare(self, task: Task) -> dict:
        """A default algorithm's checked call, kept for the rounds: its row so far, with
        ``READY`` where it is to be timed; a final row (skipped, error) where not."""
        try:
            flow, row = self._model(task)
            final = self._not_measured(flow, task, row)
            if final is not None:
                return final
            final, ready = prepare(*self._arguments(flow, task))
            if final is not None:
                return dict(row, **final)
            row.update(ready.row)
            self._deviation(flow, task, ready.out, row)
            self.ready[_key(task)] = (ready, row)
            return dict(row, **{READY: True})
        except Exception as e:
            return dict(status=OOM if is_oom(e) else ERROR, reason=one_line(e))

    def together(self, unit: Unit) -> list[dict]:
        """The unit's default algorithms, each prepared already (:meth:`prepare`), timed
        together in interleaved rounds, then each counted. If the shared rounds fail,
        each is timed alone instead (and its row then carries no round group)."""
        settings = self.config.measuring
        tasks = {_key(t): t for t in unit.together}
        kept = {k: self.ready.get(k) for k in tasks}
        rows = {k: dict(v[1]) if v else dict(status=ERROR, reason="not prepared") for k, v in kept.items()}
        ready = {k: v[0] for k, v in kept.items() if v}
        try:
            timed = measure_together(ready, unit.device, settings)
            for k, columns in timed.items():
                rows[k].update(columns, round_group=unit.group)
        except Exception:  # one call failed in the rounds: time each alone, so the others still count
            for k in ready:
                compiled = {c: v for c, v in kept[k][1].items() if c == Col.COMPILE_S}  # when it was prepared
                rows[k] = dict(self._guarded(tasks[k], self.alone), **compiled)
            ready = {}
        jobs = {k: (p, tasks[k].counts) for k, p in ready.items() if rows[k].get(Col.STATUS) != ERROR}
        for k, counted in count_all(jobs, unit.device, settings).items():
            if isinstance(counted, str):
                rows[k].update(status=ERROR, reason=f"counting failed: {counted}")
            else:
                rows[k].update(counted)
        for k in tasks:
            kept_flow = self.ready.pop(k, None)
            if kept_flow is not None:
                said_changed(kept_flow[0].model, rows[k])
        return [rows[k] for k in tasks]


def said_changed(flow, row: dict) -> dict:
    """Names, in the row's reason, the torch settings a user's flow changed in its calls
    (each was set back after the call, so no other row inherited it)."""
    changed = sorted(getattr(flow, "changed", ()))
    if changed:
        note = f"the flow changed torch's {', '.join(changed)} in its calls (set back after each)"
        row[Col.REASON] = "; ".join(r for r in (row.get(Col.REASON), note) if r)
    return row


READY = "_ready"  # a prepared row's mark, never written


def _key(task: Task) -> tuple:
    return (task.model, task.op, task.solver, task.backend, task.context)


def probe(name: str) -> registry.Identity | str:
    """What a flow is (built at d = 1), or why it cannot be built, in one line."""
    try:
        return registry.describe(name)
    except Exception as e:  # a user's factory may raise anything
        return f"cannot build it: {one_line(e)}"
