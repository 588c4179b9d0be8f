"""The command line's parser: every command, its arguments and their types.

``python -m harness`` (and the ``flowbench`` script) dispatches on the parsed
``command``; the documentation's CLI reference is generated from :func:`parser`.
"""

from __future__ import annotations

import argparse

from . import ops


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text!r}")
    return value


def _seconds(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds > 0, got {text!r}")
    return value


def _config(text: str) -> tuple[str, object]:
    import ast

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def _entrant(text: str) -> tuple[str, str]:
    spec, sep, contest = text.rpartition("=")
    if not sep or not spec or not contest:
        raise argparse.ArgumentTypeError(f"expected SPEC=CONTEST such as mine.flow:make=maf.sample, got {text!r}")
    return spec, contest


def _names(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected a comma list of names, got {text!r}")
    return names


def _int_list(text: str, what: str, least: int) -> list[int]:
    try:
        values = [int(t) for t in text.split(",") if t]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be comma-separated ints, got {text!r}") from None
    if not values or any(v < least for v in values):
        raise argparse.ArgumentTypeError(f"{what} must be ints >= {least}, got {text!r}")
    return values


def _dims(text: str) -> list[int]:
    return _int_list(text, "dims", 1)


def _contexts(text: str) -> list[int]:
    return _int_list(text, "context sizes (0: unconditional)", 0)


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(t) for t in text.split(",") if t]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be comma-separated ints, got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds):
        raise argparse.ArgumentTypeError(f"seeds must be ints >= 0, got {text!r}")
    return seeds


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction such as 0.05, got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text!r}")
    return value


def _again(p: argparse.ArgumentParser, resume: str, moved: str) -> None:
    """--resume or --fresh, never both."""
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help=resume)
    again.add_argument(
        "--fresh", action="store_true", help=f"move everything an earlier run left in DIR ({moved}) into DIR/previous/"
    )


def _executor_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--executor",
        choices=("local", "slurm"),
        help="run as submitit jobs (a sweep: one per device, model, op and batch; a fit: one per model and data "
        "set): slurm, or local to try it without a cluster; rows go to DIR/machines/<machine>/ and are merged",
    )
    p.add_argument("--slurm-partition", help="Slurm partition of the jobs")
    p.add_argument("--gpus-per-job", type=int, default=0, help="GPUs per job (default 0; a CUDA job takes 1)")
    p.add_argument("--cpus-per-job", type=_positive, help="CPUs per job (default: --threads)")
    p.add_argument("--max-parallel", type=_positive, default=1, help="jobs at once (default 1: a device each)")
    p.add_argument("--job-minutes", type=_positive, default=60, help="time limit of one job (default 60)")


DESCRIPTION = """flowbench: benchmark and check autoregressive normalizing flows.

Also installed as the command flowbench (the same as python -m harness)."""


def parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(
        prog="python -m harness", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--version", action="version", version=f"flowbench {__version__}")
    p.add_argument("--traceback", action="store_true", help="print the traceback of a user error too")
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("models", help="list the reference models with their cost and size")
    m.add_argument("--dims", type=_dims, default=[2, 64, 256], help="comma list (default 2,64,256)")

    s = sub.add_parser("sweep", help="measure time, parameters, FLOPs and memory into DIR/results.csv")
    s.add_argument(
        "--models",
        type=_names,
        help="comma list of model and peer names, or ours, peers, all (default: ours, the reference models)",
    )
    s.add_argument("--dims", type=_dims, help="comma list (default 2,4,8,...,256)")
    s.add_argument(
        "--ops",
        type=_names,
        help=f"comma list of {','.join(ops.SWEEP_OPS)} (default all; --quick: {','.join(ops.QUICK_OPS)})",
    )
    s.add_argument("--device", default="auto", help="auto (every device present), cpu or cuda")
    s.add_argument("--batch", type=_dims, help="points per call, comma list allowed (default 1024)")
    s.add_argument(
        "--context",
        type=_contexts,
        help="features of the context the flows are conditioned on, comma list; 0 = unconditional (default 0). "
        "log_prob and train_step take a context per point, sample draws its batch for one context",
    )
    s.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    s.add_argument("--budget", type=_seconds, help="seconds of measuring per configuration (default 30)")
    s.add_argument(
        "--quick", action="store_true", help="small CI profile: dims 2,8, log_prob and sample, batch 64, budget 2 s"
    )
    s.add_argument("--out", required=True, help="output folder for results.csv and meta.json")
    _again(s, "keep DIR/results.csv and skip rows already there", "tables, counts, job folders")
    s.add_argument(
        "--solvers",
        type=_names,
        help=f"slow-direction solvers: default, reference, all, or names of {', '.join(ops.ALL_SOLVERS)} "
        "(default: default,reference; each model takes those of its family)",
    )
    s.add_argument(
        "--backends",
        type=_names,
        help=f"how each configuration runs: default, or {', '.join(ops.BACKENDS)} (numba where a compiled loop "
        "exists on the CPU: the incremental solve, NAF's and B-NAF's root-finds); comma list (default: "
        "default, the numba loop where there is one, else eager)",
    )
    s.add_argument(
        "--compile-limit",
        type=_seconds,
        help="seconds torch.compile may take per configuration before its worker is killed (default 600)",
    )
    s.add_argument(
        "--rounds",
        type=_positive,
        help="interleaved rounds of each paired problem (every flow's default algorithm at one d; default 5)",
    )
    s.add_argument(
        "--processes",
        type=_positive,
        help="fresh worker processes that each time every paired problem's rounds, kept together (default 1)",
    )
    s.add_argument("--config", type=_config, action="append", help="key=value passed to every model (repeatable)")
    s.add_argument("--no-flops", action="store_true", help="skip FLOP counting")
    s.add_argument("--no-memory", action="store_true", help="skip peak-memory measurement")
    s.add_argument(
        "--no-roofline",
        action="store_true",
        help="skip measuring this machine's GEMM and copy rates (about 2 s); the report then gives no %% of bound",
    )
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument(
        "--no-isolate",
        action="store_true",
        help="measure in this process, with no deadline (for profiling; by default a worker process is "
        "killed at 1.5 x the budget + 10 s)",
    )
    _executor_arguments(s)

    f = sub.add_parser(
        "fit", help="train each model on each data set; test NLL, gap to entropy, times into DIR/fit.csv"
    )
    f.add_argument("--models", type=_names, help="comma list of model and peer names, ours, peers (default: ours)")
    f.add_argument(
        "--data",
        type=_names,
        help="comma list of eight_gaussians, checkerboard, two_spirals, two_moons, digits, power, gas, hepmass, "
        "miniboone, bsds300, and gaussian_linear (conditional: each model built with its context) "
        "(default: the four toys and digits)",
    )
    f.add_argument(
        "--data-dir",
        help="folder of the MAF paper's preprocessed UCI files (see harness.data.uci; GAS is a pandas pickle, "
        "which is unpickled: point it at trusted files only)",
    )
    f.add_argument("--steps", type=_positive, help="optimiser steps per fit at most (default 4000)")
    f.add_argument("--wall", type=_seconds, help="seconds of training per fit at most (default 30)")
    f.add_argument("--threads", type=_positive, default=1, help="intra-op threads (default 1)")
    f.add_argument(
        "--seeds",
        type=_seeds,
        help="comma list of seeds, each a fit of its own: weights, batches, a toy's samples (default 0,1,2)",
    )
    f.add_argument("--config", type=_config, action="append", help="key=value passed to every model (repeatable)")
    f.add_argument(
        "--quick",
        action="store_true",
        help="a smoke test, not a quality result: eight_gaussians and digits, one seed, 300 steps or 8 s per fit",
    )
    f.add_argument(
        "--no-isolate",
        action="store_true",
        help="fit in this process, with no deadline (by default each fit's worker "
        "is killed at 2 x the wall budget + 180 s)",
    )
    f.add_argument("--out", required=True, help="output folder for fit.csv, curves.csv, checkpoints/, densities/")
    _again(f, "keep DIR/fit.csv's finished rows and fit the rest", "fit.csv, curves, checkpoints, density grids")
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    _executor_arguments(f)

    r = sub.add_parser("report", help="write REPORT.md and plots from sweep folders and/or asv results")
    r.add_argument("sources", nargs="+", help="sweep folders (results.csv, meta.json) or asv results folders")
    r.add_argument("--out", required=True, help="output folder for REPORT.md and plots")
    r.add_argument("--no-paper", action="store_true", help="leave out the B-NAF paper's Table 1")
    r.add_argument(
        "--no-figures", action="store_true", help="tables and findings only, no figure drawn (a few seconds, not ~30)"
    )

    t = sub.add_parser("paper-table", help="the B-NAF paper's Table 1 ratios: ours beside the paper's")
    t.add_argument("--out", help="folder for paper.csv (the report's paper section)")

    v = sub.add_parser("versus", help="A/B timing of the reference models against the peers (needs the peers extra)")
    v.add_argument(
        "--contests",
        type=_names,
        help="comma list of maf.log_prob,maf.sample,iaf.sample,bnaf.log_prob,naf.log_prob,nsf.log_prob,nsf.sample "
        "(default all)",
    )
    v.add_argument(
        "--contest",
        type=_entrant,
        action="append",
        metavar="SPEC=CONTEST",
        help="add a flow to a contest's rivals, e.g. mine.flow:make=maf.sample (repeatable); "
        "without --contests, only the contests joined this way run",
    )
    v.add_argument("--dims", type=_dims, help="comma list (default 8,32,128)")
    v.add_argument(
        "--frameworks",
        type=_names,
        default=["torch", "jax"],
        help="the stacks whose peers take part: torch, jax (default both; the JAX peers where the jax extra is "
        "installed)",
    )
    v.add_argument("--naf-dims", type=_dims, default=[8], help="dims of the NAF sample/log_prob ratios (default 8)")
    v.add_argument("--no-naf", dest="naf_dims", action="store_const", const=[], help="skip the NAF ratios")
    v.add_argument("--batch", type=_positive, default=1024, help="points per call (default 1024)")
    v.add_argument(
        "--context",
        type=_contexts,
        default=[0],
        help="features of the context every contender is conditioned on, comma list; 0 = unconditional (default "
        "0). log_prob takes a context per point, sample draws its batch for one context; rivals that take no "
        "context are named and left out",
    )
    v.add_argument(
        "--rounds",
        type=_positive,
        default=15,
        help="alternating rounds at most (default 15); a contest stops after --min-rounds once its interval is "
        "clearly off 1",
    )
    v.add_argument("--min-rounds", type=_positive, default=5, help="rounds before a contest may stop early (default 5)")
    v.add_argument("--out", help="folder for versus.csv and versus.md")
    v.add_argument(
        "--deadline",
        type=_seconds,
        default=600.0,
        help="seconds one contender's checked call may take before the worker is killed (default 600): a hanging "
        "contender is reported, the rest of the contest goes on; the contest's timing gets this per contender",
    )
    _again(v, "keep the contests OUT/versus.csv holds (same batch) and measure the rest", "versus.csv, versus.md")

    g = sub.add_parser("solvers", help="A/B timing of every slow-direction solver against its family's reference")
    g.add_argument("--models", type=_names, help="comma list of reference models (default all)")
    g.add_argument(
        "--dims",
        type=_dims,
        help="comma list (default per model: "
        + "; ".join(f"{n} {','.join(map(str, f.solver_dims))}" for n, f in ops.FAMILIES.items())
        + ")",
    )
    g.add_argument("--batch", type=_positive, default=1024, help="points per call (default 1024)")
    g.add_argument("--rounds", type=_positive, default=7, help="alternating rounds (default 7)")
    g.add_argument("--max-call-s", type=_seconds, default=10.0, help="solvers slower than this per call are timed once")
    g.add_argument("--out", help="folder for solvers.csv and solvers.md")
    g.add_argument(
        "--deadline",
        type=_seconds,
        default=600.0,
        help="seconds one model and d's A/B may take before its worker is killed (default 600): a timeout row",
    )
    _again(g, "keep the models and dims OUT/solvers.csv holds and measure the rest", "solvers.csv, solvers.md")

    c = sub.add_parser(
        "check",
        help="the exactness suite for any flow: log-det, round trips, normalisation, samples against density",
    )
    c.add_argument(
        "spec",
        type=_names,
        help="comma list of model or peer names, ours, peers, all, or module:factory (factory(dim, **config) "
        "returns the flow)",
    )
    c.add_argument("--dims", type=_dims, default=[1, 2, 5], help="dims of the per-dimension checks (default 1,2,5)")
    c.add_argument("--config", type=_config, action="append", help="key=value passed to the factory (repeatable)")
    c.add_argument("--out", help="folder for checks.csv (the report's Correctness table)")
    c.add_argument("--exit-zero", action="store_true", help="exit 0 even where a check fails (recording for a report)")
    c.add_argument(
        "--deadline",
        type=_seconds,
        default=None,
        help="seconds one flow's checks may take before they are killed and fail (default: 300 times what the "
        "flow's own build, log_prob and sample took in a probe, at least 120 s; a flow whose first calls hang "
        "fails after 120 s)",
    )

    m2 = sub.add_parser("readme", help="rewrite the README's generated blocks from the committed reports")
    m2.add_argument("--check", action="store_true", help="only say which blocks are stale (exit 1 if any)")
    m2.add_argument("--readme", default="README.md", help="the README (default README.md)")
    m2.add_argument("--reports", default="reports", help="the reports folder (default reports)")

    k = sub.add_parser(
        "compare",
        help="did a change slow it down? --run BASE [HEAD]: two git revisions timed in one run (interleaved trials, "
        "a calibrated verdict); or A B: two folders measured apart (ratios; a verdict only past the drift bound)",
    )
    k.add_argument(
        "a", nargs="?", help="the baseline: a sweep folder, or an asv results folder at a commit (DIR@COMMIT)"
    )
    k.add_argument("b", nargs="?", help="the candidate, of the same kind")
    k.add_argument(
        "--run",
        nargs="+",
        metavar="REV",
        help="BASE [HEAD]: git revisions of --repo to time in one run (HEAD default: worktree, the working tree "
        "with its uncommitted changes); BASE equal to HEAD is an A/A run",
    )
    k.add_argument("--repo", help="--run: the git repository of the revisions (default: the one here)")
    k.add_argument(
        "--models",
        type=_names,
        help="--run: comma list of model and peer names, or module:factory (default made,maf,iaf,naf,bnaf)",
    )
    k.add_argument("--dims", type=_dims, help="--run: comma list (default 8,32)")
    k.add_argument(
        "--ops", type=_names, help=f"--run: comma list of {','.join(ops.SWEEP_OPS)} (default log_prob,sample)"
    )
    k.add_argument("--batch", dest="batches", type=_dims, help="--run: points per call, comma list (default 64)")
    k.add_argument("--solvers", type=_names, help="--run: as sweep's (default: default)")
    k.add_argument("--backends", type=_names, help="--run: as sweep's (default: default)")
    k.add_argument("--processes", type=_positive, default=5, help="--run: trials, each a fresh process (default 5)")
    k.add_argument("--rounds", type=_positive, default=20, help="--run: interleaved rounds per trial (default 20)")
    k.add_argument("--block", type=_seconds, default=0.01, help="--run: seconds of calls per block (default 0.01)")
    k.add_argument(
        "--inject",
        type=_fraction,
        default=0.0,
        help="--run, calibration only: B's every call does this fraction of A's call more arithmetic (default 0)",
    )
    k.add_argument(
        "--min-effect",
        type=_fraction,
        default=0.05,
        help="the smallest change called slower or faster (default 0.05)",
    )
    k.add_argument("--out", help="--run: folder for rounds.csv and compare.md; A B: a markdown file for the table")
    k.add_argument(
        "--drift",
        help="A B: the A/A drift calibration (JSON with 'drift', default reports/cpu/ab/drift.json of this checkout)",
    )
    k.add_argument("--across-machines", action="store_true", help="A B: judge sides measured on different machines")
    _again(k, "--run: keep DIR/rounds.csv and measure only what is missing", "rounds, settings, table")
    k.add_argument("--no-progress", action="store_true", help="--run: no progress bar")
    k.add_argument("--exit-zero", action="store_true", help="exit 0 even where a configuration is slower")

    a = sub.add_parser("asv-table", help="print an asv results folder as the tidy table")
    a.add_argument("results_dir", nargs="?", default=".asv/results", help="asv's results folder (default .asv/results)")
    return p
