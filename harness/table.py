"""The tidy results table's vocabulary: its columns, key, statuses, units and file names.

The sweep writes it, the asv reader and the report read it; each of them takes these
names from here.
"""

from __future__ import annotations

RESULTS = "results.csv"
META = "meta.json"

COLUMNS = [
    "model",
    "dim",
    "op",
    "device",
    "batch",
    "solver",
    "kind",
    "median_s",
    "iqr_s",
    "runs",
    "status",
    "reason",
    "evaluations",
    "iterations",
    "evaluations_per_dim",
    "max_rel_dev",
    "params_stored",
    "params_effective",
    "flops",
    "flops_method",
    "peak_mem_bytes",
    "threads",
    "dtype",
    "source",
    "commit",
]
# One row per key. ``solver`` is the slow direction's algorithm (harness.models.solvers),
# ``direct`` for a parallel op.
KEY = ("model", "dim", "op", "device", "batch", "solver")
TEXT = ("model", "op", "device", "solver", "kind", "status", "reason", "flops_method", "dtype", "source", "commit")
NUMERIC = [c for c in COLUMNS if c not in TEXT]

OK, SKIPPED, OOM, ERROR, TIMEOUT = "ok", "skipped", "oom", "error", "timeout"
STATUSES = (OK, SKIPPED, OOM, ERROR, TIMEOUT)

UNITS = {
    "median_s": "seconds per call",
    "iqr_s": "seconds per call",
    "evaluations": "evaluations of one dimension's output per call, summed over layers",
    "iterations": "solver steps on the critical path per call, summed over layers",
    "evaluations_per_dim": "evaluations / (d x layers that solve): 1 for one evaluation per dimension",
    "max_rel_dev": "max |output - reference solver's output| / (1 + |reference output|), same weights and input",
    "flops": "floating-point operations per call (2 per multiply-add; 1 per element-wise op and element)",
    "peak_mem_bytes": "bytes",
    "params_stored": "scalars",
    "params_effective": "scalars",
    "gemm_gflops": "GFLOP/s of torch.mm at the sweep's threads and dtype (the roofline)",
}


def key_of(row: dict) -> tuple[str, ...]:
    return tuple(str(row[k]) for k in KEY)
