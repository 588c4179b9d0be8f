"""The second vocabulary, beside the table's columns (:mod:`harness.table`): the ops a
flow is measured on, the reference families, the solvers of their slow directions and
the peer libraries. No torch here: the report and the asv reader use it without a model.

Everything else iterates these: the sweep its ops, the models their builders and
solvers, the report its sections' rows, styles and prose, the CLI its help. Adding an
op, a solver or a reference flow starts with an entry here (docs/extending.md).
"""

from __future__ import annotations

from dataclasses import dataclass

# ---- ops ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    """An op the harness times.

    Attributes:
        name: its name in the table's ``op`` column and on the command line.
        title: what it is, in words.
        direction: ``data->base`` or ``base->data``.
        cost_of: the direction whose cost kind (parallel, sequential, iterative) it has.
        returns: what a call gives back, which the contract checks
            (:mod:`harness.measure.contract`): ``density`` (batch,), ``points``
            (batch, d), ``pass`` (z (batch, d), log|det| (batch,)) or ``loss`` ().
        quick: part of ``--quick`` sweeps.
    """

    name: str
    title: str
    direction: str
    cost_of: str
    returns: str
    quick: bool = True

    @property
    def asv(self) -> str:
        """The asv benchmark method that times it (``time_log_prob``)."""
        return f"time_{self.name}"

    @property
    def asv_class(self) -> str:
        """The asv benchmark class that holds it (``LogProb``)."""
        return "".join(part.title() for part in self.name.split("_"))


LOG_PROB, SAMPLE, TRAIN_STEP = "log_prob", "sample", "train_step"
OPS: dict[str, Op] = {
    op.name: op
    for op in (
        Op(LOG_PROB, "density evaluation", "data->base", LOG_PROB, "density"),
        Op(SAMPLE, "sampling (base->data on given base points)", "base->data", SAMPLE, "points"),
        Op(TRAIN_STEP, "a training step (log_prob, backward, Adam)", "data->base", LOG_PROB, "loss", quick=False),
    )
}
DIRECTIONS = (LOG_PROB, SAMPLE)  # the two directions of a flow; every other op takes one's cost
SWEEP_OPS = tuple(OPS)
QUICK_OPS = tuple(name for name, op in OPS.items() if op.quick)


def other_direction(op: str) -> str:
    """The direction a ratio divides ``op`` by: its cost direction's counterpart, or for
    an op that is not a direction (a training step), the direction it costs like."""
    cost = OPS[op].cost_of
    if op != cost:
        return cost
    return SAMPLE if op == LOG_PROB else LOG_PROB


# ---- solvers -----------------------------------------------------------------------

DIRECT = "direct"  # the solver column of an op that is one parallel pass
NATIVE = "native"  # the solver column of a peer's slow op: the library's own algorithm


@dataclass(frozen=True)
class Solver:
    """An exact algorithm for a slow direction.

    Attributes:
        name: its name in the ``solver`` column and on the command line.
        family: the systems it solves: ``affine`` (MADE, MAF, IAF; NSF's splines too: each
            dimension in closed form once those before it are known) or ``monotone``
            (NAF, B-NAF).
        role: ``reference`` (the textbook algorithm every other is checked against),
            ``default`` (the fastest exact one on the CPU, from ``harness solvers``) or ''.
        about: one sentence for the report and the documentation.
    """

    name: str
    family: str
    role: str
    about: str


SOLVER_FAMILIES = ("affine", "monotone")
# in each family the reference first; a name means one role whatever the family
SOLVERS: dict[tuple[str, str], Solver] = {
    (s.family, s.name): s
    for s in (
        Solver("sequential", "affine", "reference", "d network passes per layer, one per dimension"),
        Solver(
            "incremental",
            "affine",
            "default",
            "d steps that each compute only the hidden units of the degree just made known: one pass of arithmetic",
        ),
        Solver(
            "fixed-point",
            "affine",
            "",
            "Jacobi iterations, one full pass each, until every residual is within tolerance (exact after d)",
        ),
        Solver("bisection", "monotone", "reference", "each dimension in order, a bracket doubled then halved"),
        Solver(
            "newton",
            "monotone",
            "default",
            "safeguarded Newton steps on each dimension in order, only that dimension's blocks per evaluation",
        ),
        Solver(
            "fixed-point",
            "monotone",
            "",
            "bracketed Newton steps on every dimension at once, one full pass per iteration",
        ),
    )
}
ALL_SOLVERS = tuple(dict.fromkeys(name for _, name in SOLVERS))


def solvers_of(family: str) -> tuple[str, ...]:
    """The solvers of a solver family (``affine`` or ``monotone``), the reference first."""
    return tuple(name for f, name in SOLVERS if f == family)


def _with_role(family: str, role: str) -> str:
    return next(name for name in solvers_of(family) if SOLVERS[family, name].role == role)


def reference_of(family: str) -> str:
    return _with_role(family, "reference")


def default_of(family: str) -> str:
    return _with_role(family, "default")


def role(solver: str) -> str:
    """``reference``, ``default`` or '' (``direct`` and ``native`` included)."""
    return next((s.role for (_, name), s in SOLVERS.items() if name == solver), "")


# ---- backends ----------------------------------------------------------------------

EAGER, NUMBA, COMPILE = "eager", "numba", "compile"
BACKENDS = (EAGER, NUMBA, COMPILE)


def has_kernel(model: str, solver: str, op: str, device: str = "cpu") -> bool:
    """Whether a numba kernel runs this configuration: a reference family's solver with
    one (:attr:`Family.kernels`), on a direction (a training step needs gradients, which
    a kernel does not give), on the CPU."""
    family = FAMILIES.get(model)
    return family is not None and solver in family.kernels and op in DIRECTIONS and device == "cpu"


def default_backend(model: str, solver: str, op: str, device: str = "cpu") -> str:
    """How a configuration runs by default: the compiled loop where there is one, else
    torch's eager ops."""
    return NUMBA if has_kernel(model, solver, op, device) else EAGER


# ---- reference families ------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """A reference flow.

    Attributes:
        name: its name (``maf``), as ``--models`` takes it.
        paper: the paper it follows.
        slow: the op its slow direction is (``sample`` or ``log_prob``).
        solvers: the solver family of that direction.
        builder: ``module:function`` that builds it (imported by :mod:`harness.models`).
        color, marker: its style in every figure.
        kernels: the solvers of its slow direction that run as a compiled loop
            (harness.models.kernels) where no gradient is wanted.
    """

    name: str
    paper: str
    slow: str
    solvers: str
    builder: str
    color: str
    marker: str
    kernels: tuple[str, ...] = ()

    @property
    def solver_dims(self) -> tuple[int, ...]:
        """The dims of the solver A/B (``harness solvers``) by default: monotone
        root-finds cost more per dimension, so they stop lower."""
        return (8, 64, 256) if self.solvers == "affine" else (8, 32, 64)


INCREMENTAL, ROOT_FINDS = ("incremental",), ("bisection", "newton")  # solvers with compiled loops
FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "made", "Germain et al., 2015", SAMPLE, "affine", "harness.models.made:build_made", "C0", "o", INCREMENTAL
        ),
        Family(
            "maf", "Papamakarios et al., 2017", SAMPLE, "affine", "harness.models.maf:build_maf", "C1", "s", INCREMENTAL
        ),
        Family(
            "iaf", "Kingma et al., 2016", LOG_PROB, "affine", "harness.models.iaf:build_iaf", "C2", "^", INCREMENTAL
        ),
        Family("naf", "Huang et al., 2018", SAMPLE, "monotone", "harness.models.naf:build_naf", "C3", "D", ROOT_FINDS),
        Family(
            "bnaf", "De Cao et al., 2019", SAMPLE, "monotone", "harness.models.bnaf:build_bnaf", "C4", "v", ROOT_FINDS
        ),
        Family("nsf", "Durkan et al., 2019", SAMPLE, "affine", "harness.models.nsf:build_nsf", "C5", "p", INCREMENTAL),
    )
}
NAMES = tuple(FAMILIES)

# ---- libraries ---------------------------------------------------------------------

OURS = "flowbench"  # the library column of the reference models
# peers' libraries, with the shade of their family's colour, the marker and the line
# style they take (ours and users' flows are solid)
PEER_LIBRARIES: dict[str, tuple[str, float, str, str]] = {
    "zuko": ("white", 0.45, "P", "--"),
    "pyro": ("black", 0.35, "X", "-."),
    "nflows": ("white", 0.7, "*", ":"),
    "normflows": ("black", 0.55, "h", (0, (5, 1))),
    "sbi": ("white", 0.55, "s", (0, (5, 2, 1, 2))),
    "flowjax": ("white", 0.3, "D", (0, (3, 1, 1, 1))),  # JAX
    "numpyro": ("black", 0.2, "p", (0, (1, 1))),  # JAX
}
# the stack each library computes in (a peer adapter's ``framework``; tested to agree),
# and the names the report gives them; a library not listed is PyTorch
FRAMEWORK_NAMES = {"torch": "PyTorch", "jax": "JAX"}
JAX_LIBRARIES = ("flowjax", "numpyro")


def framework(library: str) -> str:
    """``library``'s framework: ``jax`` or ``torch`` (ours, the torch peers, users' flows)."""
    return "jax" if library in JAX_LIBRARIES else "torch"
