"""The tidy results table's vocabulary: its columns, key, statuses, row type, units and
file names. No torch here: the report and the asv reader import it without a model.

The sweep writes the table, the asv reader and the report read it; each of them takes
these names from here.
"""

from __future__ import annotations

from enum import Enum
from typing import TypedDict

RESULTS = "results.csv"
META = "meta.json"
COUNTS = "counts.json"  # cached FLOPs and peak memory per configuration and commit
VERSUS = "versus.csv"  # the A/B contests (harness.versus)
VERSUS_MD = "versus.md"
SOLVERS = "solvers.csv"  # the solver A/B (harness.algorithms)
SOLVERS_MD = "solvers.md"
CHECKS = "checks.csv"  # the exactness suite (harness.check)

OURS = "flowbench"  # the library column of the reference models


class Status(str, Enum):
    """A row's outcome."""

    OK = "ok"
    SKIPPED = "skipped"  # not measured, with the reason (over budget, unsupported, unavailable)
    OOM = "oom"
    ERROR = "error"
    TIMEOUT = "timeout"

    def __str__(self) -> str:  # written as its value in CSV, JSON and f-strings alike
        return self.value


OK, SKIPPED, OOM, ERROR, TIMEOUT = Status.OK, Status.SKIPPED, Status.OOM, Status.ERROR, Status.TIMEOUT
STATUSES = tuple(Status)


class Row(TypedDict, total=False):
    """One row of results.csv (blank cells are missing keys)."""

    model: str  # a reference model, a peer (library.family) or a user's spec
    family: str  # the reference family it matches (made, maf, iaf, naf, bnaf), '' if none
    library: str  # flowbench for ours, zuko, pyro, nflows, or the user's module
    dim: int
    op: str
    device: str
    batch: int
    solver: str
    kind: str
    median_s: float
    iqr_s: float
    runs: int
    status: Status
    reason: str
    evaluations: float
    iterations: float
    evaluations_per_dim: float
    max_rel_dev: float
    params_stored: int
    params_effective: int
    flops: float
    flops_method: str
    flops_note: str  # why flops is blank where the row is ok
    peak_mem_bytes: float
    threads: int
    dtype: str
    source: str
    commit: str


COLUMNS = list(Row.__annotations__)


class Col:
    """The results table's column names, one constant each: code outside this module
    writes ``Col.MEDIAN_S``, never the literal, so a renamed column cannot be missed."""

    MODEL = "model"
    FAMILY = "family"
    LIBRARY = "library"
    DIM = "dim"
    OP = "op"
    DEVICE = "device"
    BATCH = "batch"
    SOLVER = "solver"
    KIND = "kind"
    MEDIAN_S = "median_s"
    IQR_S = "iqr_s"
    RUNS = "runs"
    STATUS = "status"
    REASON = "reason"
    EVALUATIONS = "evaluations"
    ITERATIONS = "iterations"
    EVALUATIONS_PER_DIM = "evaluations_per_dim"
    MAX_REL_DEV = "max_rel_dev"
    PARAMS_STORED = "params_stored"
    PARAMS_EFFECTIVE = "params_effective"
    FLOPS = "flops"
    FLOPS_METHOD = "flops_method"
    FLOPS_NOTE = "flops_note"
    PEAK_MEM_BYTES = "peak_mem_bytes"
    THREADS = "threads"
    DTYPE = "dtype"
    SOURCE = "source"
    COMMIT = "commit"


# One row per key. ``solver`` is the slow direction's algorithm (harness.models.solvers),
# ``direct`` for a parallel op.
KEY = (Col.MODEL, Col.DIM, Col.OP, Col.DEVICE, Col.BATCH, Col.SOLVER)
TEXT = (
    Col.MODEL,
    Col.FAMILY,
    Col.LIBRARY,
    Col.OP,
    Col.DEVICE,
    Col.SOLVER,
    Col.KIND,
    Col.STATUS,
    Col.REASON,
    Col.FLOPS_METHOD,
    Col.FLOPS_NOTE,
    Col.DTYPE,
    Col.SOURCE,
    Col.COMMIT,
)
NUMERIC = [c for c in COLUMNS if c not in TEXT]

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
