"""The tidy results table's vocabulary: its columns, key, statuses, row type, units and
file names. No torch here: the report and the asv reader import it without a model.

The sweep writes the table, the asv reader and the report read it; each of them takes
these names from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TypedDict

from .records import COUNT, FLAG, NUMBER, NUMBERS, OBJECT, OBJECTS, STRING, fields, objects_of

RESULTS = "results.csv"
AB_ROUNDS = "rounds.csv"  # compare --run: every timed block of both revisions (harness.ab)
AB_META = "ab.json"  # compare --run: both sides, the machine and the settings
AB_MD = "compare.md"  # compare --run: the table and its summary
META = "meta.json"
COUNTS = "counts.json"  # cached FLOPs and peak memory per configuration and commit
VERSUS = "versus.csv"  # the A/B contests (harness.versus)
VERSUS_MD = "versus.md"
SOLVERS = "solvers.csv"  # the solver A/B (harness.algorithms)
SOLVERS_MD = "solvers.md"
CHECKS = "checks.csv"  # the exactness suite (harness.check)
PAPER = "paper.csv"  # the B-NAF paper's Table 1 with our presets' counts (harness.paper)
REPORT = "REPORT.md"
REPORT_HTML = "REPORT.html"  # the same report as one page, figures inline (harness.report.page)
TIMING = "timing.json"  # make report's and make test's wall time and load (the README's commands block)
FIT = "fit.csv"  # one row per model x data set (harness.fit)
FIT_META = "fit.json"
CURVES = "curves.csv"  # the validation curve of every fit
POSTERIOR = "posterior.csv"  # a conditional fit judged at each fixed observation (harness.data.posteriors)
CHECKPOINTS = "checkpoints"  # folder: trained state dicts, <model>__<data>.pt
DENSITIES = "densities"  # folder: log-density grids of the 2-D fits, <model>__<data>.npy
NLL = "nll"  # folder: each test point's NLL of every fit, <model>__<data>__s<seed>.npy
# a distributed run's folders and files (harness.cluster)
MACHINES = "machines"  # DIR/machines/<machine>/
JOBS = "jobs"  # DIR/machines/<machine>/jobs/<job>/
FINISHED = "finished.json"  # a job's mark: all its rows are on disk
PLAN = "plan.json"  # the parent's settings and jobs, checked on resume
SUBMITIT = "submitit"  # submitit's own logs and pickles
# the store's own (harness.store)
LOCK = ".lock"  # held while a command writes the folder; names the holder
WORKER_LOCK = ".worker.lock"  # held by a sweep's measuring worker while it lives
PREVIOUS = "previous"  # --fresh moves a folder's contents into previous/<time>/


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
    batch: int  # points per call: (x, context) pairs, or for a conditional sample the draws for one context
    context: int  # features of the context the flow is conditioned on; 0: unconditional
    contexts_per_call: int  # distinct contexts in one call: batch for log_prob and train_step, 1 for sample; blank at 0
    solver: str
    backend: str  # how it ran: eager (torch's ops), numba (the compiled loop), compile (torch.compile)
    kind: str
    median_s: float
    iqr_s: float
    runs: int
    round_s: str  # seconds per call of each run, space-separated, in the order timed
    round_group: str  # rows timed in the same interleaved rounds share it: their ratios pair by run
    compile_s: float  # seconds compiling took before the first call (numba's JIT, torch.compile), never timed
    status: Status
    reason: str
    one_call_s: float  # a row skipped after its checked call: that call's seconds (where its curve would be)
    evaluations: float
    iterations: float
    evaluations_per_dim: float
    max_rel_dev: float
    params_stored: int
    params_effective: int
    flops: float
    bytes_moved: float  # bytes each dispatched op read and wrote, summed over the ops of one call
    flops_method: str
    flops_note: str  # why flops is blank where the row is ok
    peak_mem_bytes: float
    threads: int
    dtype: str
    source: str
    commit: str
    machine: str  # the hardware: the GPU's name for cuda rows, the CPU model and cores for cpu rows


COLUMNS = list(Row.__annotations__)


class FitRow(TypedDict, total=False):
    """One row of fit.csv: a model trained on a data set and judged on its test split."""

    model: str
    family: str
    library: str
    data: str
    dim: int
    params_stored: int
    params_effective: int
    steps: int  # optimiser steps taken
    best_step: int  # the step of the weights kept (best on validation)
    stopped: str  # why training ended: early stop, step budget or wall budget
    train_s: float
    step_s: float
    test_nll: float
    test_nll_se: float
    val_nll: float
    val_nll_se: float
    bits_per_dim: float
    entropy: float
    gap: float  # mean over test points of log p(x) - log q(x): KL(truth || model), paired
    gap_se: float
    baseline_nll: float  # the standard normal's test NLL in the same units
    worse_than_baseline: bool  # the fit's test NLL is above N(0, I)'s
    val_test_disagree: bool  # validation and test NLL further apart than 3 joint standard errors
    nll_units: str  # what test_nll is per: nats per point, nats per image
    trained_log_prob_s: float  # the trained model's log_prob, seconds per call
    trained_sample_s: float
    solver: str
    evaluations_per_dim: float
    status: Status
    reason: str
    seed: int
    threads: int
    checkpoint: str
    nll_file: str  # each test point's NLL (float32 .npy), for paired comparisons
    commit: str
    machine: str


FIT_COLUMNS = list(FitRow.__annotations__)


class Col:
    """The column names of the results, fit and curve tables, one constant each: code
    outside this module writes ``Col.MEDIAN_S``, never the literal, so a renamed column
    cannot be missed."""

    MODEL = "model"
    FAMILY = "family"
    LIBRARY = "library"
    DIM = "dim"
    OP = "op"
    DEVICE = "device"
    BATCH = "batch"
    CONTEXT = "context"
    CONTEXTS_PER_CALL = "contexts_per_call"
    SOLVER = "solver"
    BACKEND = "backend"
    KIND = "kind"
    MEDIAN_S = "median_s"
    IQR_S = "iqr_s"
    RUNS = "runs"
    ROUND_S = "round_s"
    ROUND_GROUP = "round_group"
    COMPILE_S = "compile_s"
    STATUS = "status"
    REASON = "reason"
    ONE_CALL_S = "one_call_s"
    EVALUATIONS = "evaluations"
    ITERATIONS = "iterations"
    EVALUATIONS_PER_DIM = "evaluations_per_dim"
    MAX_REL_DEV = "max_rel_dev"
    PARAMS_STORED = "params_stored"
    PARAMS_EFFECTIVE = "params_effective"
    FLOPS = "flops"
    BYTES_MOVED = "bytes_moved"
    FLOPS_METHOD = "flops_method"
    FLOPS_NOTE = "flops_note"
    PEAK_MEM_BYTES = "peak_mem_bytes"
    THREADS = "threads"
    DTYPE = "dtype"
    SOURCE = "source"
    COMMIT = "commit"
    MACHINE = "machine"
    DATA = "data"
    STEPS = "steps"
    BEST_STEP = "best_step"
    STOPPED = "stopped"
    TRAIN_S = "train_s"
    STEP_S = "step_s"
    TEST_NLL = "test_nll"
    TEST_NLL_SE = "test_nll_se"
    VAL_NLL = "val_nll"
    VAL_NLL_SE = "val_nll_se"
    BITS_PER_DIM = "bits_per_dim"
    ENTROPY = "entropy"
    GAP = "gap"
    GAP_SE = "gap_se"
    BASELINE_NLL = "baseline_nll"
    WORSE_THAN_BASELINE = "worse_than_baseline"
    VAL_TEST_DISAGREE = "val_test_disagree"
    NLL_UNITS = "nll_units"
    TRAINED_LOG_PROB_S = "trained_log_prob_s"
    TRAINED_SAMPLE_S = "trained_sample_s"
    SEED = "seed"
    CHECKPOINT = "checkpoint"
    NLL_FILE = "nll_file"
    STEP = "step"
    WALL_S = "wall_s"
    TRAIN_NLL = "train_nll"
    LEARNING_RATE = "learning_rate"
    OBSERVATION = "observation"  # the index of a conditional task's fixed observation
    POINTS = "points"
    # compare --run's rounds (harness.ab)
    TRIAL = "trial"
    ROUND = "round"
    REVISION = "revision"
    POSITION = "position"
    CALLS = "calls"
    CALL_S = "call_s"


FIT_KEY = (Col.MODEL, Col.DATA, Col.SEED)
CURVE_COLUMNS = [Col.MODEL, Col.DATA, Col.SEED, Col.STEP, Col.WALL_S, Col.TRAIN_NLL, Col.VAL_NLL, Col.LEARNING_RATE]

POSTERIOR_COLUMNS = [Col.MODEL, Col.DATA, Col.SEED, Col.OBSERVATION, Col.POINTS, Col.TEST_NLL, Col.GAP, Col.GAP_SE]

# One row per key. ``solver`` is the slow direction's algorithm (harness.models.solvers),
# ``direct`` for a parallel op.
# a configuration of one flow: compare --run's rounds are keyed by it
CONFIG_KEY = (Col.MODEL, Col.DIM, Col.OP, Col.DEVICE, Col.BATCH, Col.SOLVER, Col.BACKEND)
KEY = (*CONFIG_KEY, Col.CONTEXT)
TEXT = (
    Col.ROUND_S,
    Col.ROUND_GROUP,
    Col.MODEL,
    Col.FAMILY,
    Col.LIBRARY,
    Col.OP,
    Col.DEVICE,
    Col.SOLVER,
    Col.BACKEND,
    Col.KIND,
    Col.STATUS,
    Col.REASON,
    Col.FLOPS_METHOD,
    Col.FLOPS_NOTE,
    Col.DTYPE,
    Col.SOURCE,
    Col.COMMIT,
    Col.MACHINE,
)
NUMERIC = [c for c in COLUMNS if c not in TEXT]

UNITS = {
    "median_s": "seconds per call",
    "iqr_s": "seconds per call (interquartile range of the runs)",
    "round_s": "seconds per call of each run (a block of calls), in the order timed",
    "compile_s": "seconds, once per process and configuration, before the first call (never in a timing)",
    "context": "features of the context vector c of p(x | c); 0 for an unconditional flow",
    "contexts_per_call": "distinct contexts per call: batch for (x, c) pairs (log_prob, train_step), 1 for sample "
    "(batch draws from p(x | c) of one observation, the posterior's shape)",
    "one_call_s": "seconds of the one checked call of a row skipped as over budget after it (never a timing)",
    "evaluations": "evaluations of one dimension's output per call, summed over layers",
    "iterations": "solver steps on the critical path per call, summed over layers",
    "evaluations_per_dim": "evaluations / (d x layers that solve): 1 for one evaluation per dimension",
    "max_rel_dev": "max |output - reference solver's output| / (1 + |reference output|), same weights and input",
    "flops": "floating-point operations per call (2 per multiply-add; 1 per element-wise op and element)",
    "peak_mem_bytes": "bytes",
    "params_stored": "scalars",
    "params_effective": "scalars",
    "bytes_moved": "bytes per call that its ops read (tensor inputs) and wrote (outputs), each op on its own, "
    "views none (the eager traffic the roofline's intensity is read at)",
    "gemm_gflops": "GFLOP/s of torch.mm at the sweep's threads and dtype (the compute roofline)",
    "copy_gbps": "GB/s of a large tensor copy, bytes read plus written (the memory roofline)",
    "cache_gbps": "GB/s of a copy that fits the L2 cache, bytes read plus written (the in-cache roofline)",
}


@dataclass(frozen=True)
class TableSpec:
    """A CSV table a command writes: its file name, columns (in order), the key that
    names a row once, and the settings (keys of the command's config) a resume must
    share with the run that wrote it."""

    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    settings: tuple[str, ...] = ()


# Settings that change what a row means: resuming with others would mix rows.
SWEEP_SETTINGS = (
    Col.THREADS,
    "budget_s",
    "min_run_time",
    "seed",
    "model_config",
    Col.FLOPS,
    "memory",
    "rounds",
    "processes",
)
FIT_SETTINGS = ("steps", "wall_s", "batch_size", "lr", "eval_every", "plateau", "patience", "model_config")
FIT_SETTINGS += ("data_dir",)
RESULTS_TABLE = TableSpec(RESULTS, tuple(COLUMNS), KEY, SWEEP_SETTINGS)
# compare --run: one row per timed block (or one error row per trial and configuration)
AB_COLUMNS = [Col.TRIAL, *CONFIG_KEY, Col.ROUND, Col.REVISION, Col.POSITION, Col.CALLS, Col.CALL_S]
AB_COLUMNS += [Col.STATUS, Col.REASON]
AB_KEY = (Col.TRIAL, *CONFIG_KEY, Col.ROUND, Col.REVISION)
AB_SETTINGS = ("sides", "grid", "processes", "rounds", "block_s", "max_s", Col.SEED, "inject", Col.THREADS)
AB_TABLE = TableSpec(AB_ROUNDS, tuple(AB_COLUMNS), AB_KEY, AB_SETTINGS)
FIT_TABLE = TableSpec(FIT, tuple(FIT_COLUMNS), FIT_KEY, FIT_SETTINGS)
CURVES_TABLE = TableSpec(CURVES, tuple(CURVE_COLUMNS), (Col.MODEL, Col.DATA, Col.SEED, Col.STEP))
POSTERIOR_TABLE = TableSpec(POSTERIOR, tuple(POSTERIOR_COLUMNS), (*FIT_KEY, Col.OBSERVATION))

FIT_UNITS = {
    "test_nll": "nll_units of the row: nats per point (toys, UCI) or nats per image (digits)",
    "test_nll_se": "the same units: standard error of the test split's mean",
    "val_nll": "the same units as test_nll (the weights kept, on the validation split)",
    "val_nll_se": "the same units: standard error of the validation split's mean",
    "bits_per_dim": "bits per dimension",
    "entropy": "nats per point",
    "gap": "nats per point: mean over the test points of log p(x) - log q(x)",
    "gap_se": "nats per point: standard error of that mean (paired on the same points)",
    "train_nll, val_nll of curves.csv": "the data set's units, as test_nll",
    "test_nll, gap, gap_se of posterior.csv": "nats per point, over the draws from one observation's posterior",
    "baseline_nll": "the same units as test_nll",
    "train_s": "seconds",
    "step_s": "seconds per optimiser step",
    "trained_log_prob_s": "seconds per call",
    "trained_sample_s": "seconds per call",
    "params_stored": "scalars",
    "params_effective": "scalars",
}


SMOKE = "a smoke test (fit --quick): too short to judge a flow's quality"


def fit_stem(model: str, data: str) -> str:
    """The file stem of a fit's checkpoint and density grid (``truth`` for a toy's own)."""
    return f"{model}__{data}".replace(":", "-").replace("/", "-")


def key_of(row: dict) -> tuple[str, ...]:
    return tuple(str(row[k]) for k in KEY)


# What the settings files hold where a reader relies on it: records.read_json refuses a
# file of another shape in one line (a list where an object was, text for a number).
_ENVIRONMENT = dict(cpu=STRING, cpu_count=COUNT, gpu=STRING, torch=STRING, commit=STRING, dirty=FLAG, date=STRING)
_ENVIRONMENT |= dict(command=STRING, hostname=STRING, threads=COUNT, load_start=NUMBERS, load_end=NUMBERS)
META_SHAPE = fields(
    "a sweep's or fit's settings",
    **_ENVIRONMENT,
    config=OBJECT,
    resumed=OBJECTS,
    units=objects_of(STRING),
    roofline=objects_of(OBJECT),
    machines=objects_of(OBJECT),
)
AB_META_SHAPE = fields(
    "a two-revision run's settings",
    **_ENVIRONMENT,
    load_at_start=NUMBERS,
    sides_resolved=objects_of(STRING),
    config=fields("an object", sides=objects_of(OBJECT), threads=COUNT),
)
PLAN_SHAPE = fields("a distributed run's plan", config=OBJECT, executor=OBJECT)
COUNTS_SHAPE = objects_of(objects_of(NUMBER))  # counts.json: per configuration, its counts
