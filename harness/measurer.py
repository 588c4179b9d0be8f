"""The sweep's measuring side: builds each task's model and measures it, in the
worker process (harness.worker) or in-process with ``isolate=False``."""

from __future__ import annotations

import torch

from . import registry
from .grid import Config, Task
from .measure import allocator
from .measure.call import is_oom, measure, one_line
from .measure.counting import count_params
from .measure.stats import relative_deviation
from .models import TRAIN_STEP
from .models.solvers import DIRECT, NATIVE
from .table import ERROR, OOM, SKIPPED, Col


class Measurer:
    """Measures tasks one after another, keeping the last model built and the reference
    solver's output of the current problem (for the other solvers' deviation)."""

    def __init__(self, config: Config):
        self.config = config
        allocator.tune()  # in the measuring process, before any buffer
        self.built: dict[tuple, tuple] = {}  # (device, model, dim, solver) -> (flow, (stored, effective))
        self.reference_out: dict[tuple, object] = {}

    def __call__(self, task: Task) -> dict:
        try:
            return self.measure(task)
        except Exception as e:  # record, and go on with the sweep
            if task.device == "cuda":
                torch.cuda.empty_cache()
            return dict(status=OOM if is_oom(e) else ERROR, reason=one_line(e))

    def measure(self, task: Task) -> dict:
        config, name, device = self.config, task.model, task.device
        solver_config = {} if task.solver in (DIRECT, NATIVE) else {"solver": task.solver}
        key = (device, name, task.dim, task.solver)
        if key not in self.built:
            self.built.clear()  # one model in memory at a time
            torch.manual_seed(config.seed)  # the same weights whatever the solver
            flow = registry.build_any(name, task.dim, **config.model_config, **solver_config).to(device).eval()
            self.built[key] = (flow, count_params(flow, flow.masks()))
        model, (stored, effective) = self.built[key]
        row = dict(kind=model.cost[task.op], params_stored=stored, params_effective=effective)
        # a training step is log_prob's gradient: it goes where log_prob goes
        cannot = model.unsupported.get("log_prob" if task.op == TRAIN_STEP else task.op)
        if cannot:
            return dict(row, status=SKIPPED, reason=cannot)
        if task.skip:
            return dict(row, status=SKIPPED, reason=task.skip)
        measured, out = measure(
            model,
            task.op,
            device,
            task.batch,
            config.measuring,
            task.estimate,
            essential=task.essential,
            counts=task.counts,
        )
        row.update(measured)
        problem = (device, name, task.dim, task.op, task.batch)
        if out is not None and task.solver == model.reference_solver:
            self.reference_out = {problem: out}  # only the current problem's is kept
        elif out is not None and problem in self.reference_out:
            row[Col.MAX_REL_DEV] = relative_deviation(out, self.reference_out[problem])
        return row
