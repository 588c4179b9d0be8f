"""flowbench: benchmark and check autoregressive normalizing flows.

Also installed as the command flowbench (the same as python -m harness).
"""

from __future__ import annotations

import argparse
import sys
import time

from tabulate import tabulate

from .cli import parser
from .table import Col


def _models(args: argparse.Namespace) -> int:
    from .measure.counting import count_params
    from .models import NAMES, OPS, build, keywords

    rows = []
    for name in NAMES:
        for dim in args.dims:
            m = build(name, dim)
            stored, effective = count_params(m)
            layers = m.solving_layers
            rows.append([name, dim, *(m.cost.describe(op, layers) for op in OPS), stored, effective])
    headers = [Col.MODEL, "d", "log_prob", "sample", Col.PARAMS_STORED, Col.PARAMS_EFFECTIVE]
    print(tabulate(rows, headers, tablefmt="github", intfmt=","))
    print("\nconfig keywords: " + "; ".join(f"{n}: {', '.join(keywords(n))}" for n in NAMES))
    print("\npeers (same config keywords as their family; see harness.peers):\n")
    print(peers_table())
    return 0


def peers_table() -> str:
    from . import peers

    rows = []
    for name, p in peers.PEERS.items():
        missing = peers.unavailable(name)
        ops = [p.unsupported.get(op) and "none: no inverse" or p.cost.describe(op) for op in ("log_prob", "sample")]
        rows.append([name, p.family, p.library, *ops, f"unavailable: {missing}" if missing else "available"])
    return tabulate(rows, ["peer", Col.FAMILY, Col.LIBRARY, "log_prob", "sample", Col.STATUS], tablefmt="github")


def _sweep(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .grid import GROUPS, Config
    from .models import NAMES
    from .sweep import TRACK, run, summary
    from .table import RESULTS, STATUSES

    models = [m for name in args.models or list(NAMES) for m in GROUPS.get(name, (name,))]
    fields = dict(
        models=list(dict.fromkeys(models)),
        device=args.device,
        threads=args.threads,
        solvers=args.solvers or ["default", "reference"],
        flops=not args.no_flops,
        memory=not args.no_memory,
        roofline=not args.no_roofline,
        isolate=not args.no_isolate,
        model_config=dict(args.config or []),
    )
    given = (("dims", args.dims), ("batches", args.batch), ("budget_s", args.budget), ("ops", args.ops))
    given += (("backends", args.backends), ("compile_limit_s", args.compile_limit), ("rounds", args.rounds))
    given += (("processes", args.processes), ("contexts", args.context))
    for key, value in given:
        if value is not None:
            fields[key] = value
    config = Config.quick(**fields) if args.quick else Config(**fields)
    out = Path(args.out)
    start = time.perf_counter()
    if args.executor:
        from .cluster import run as run_jobs

        rows = run_jobs(
            TRACK, config, out, _cluster(args), resume=args.resume, fresh=args.fresh, progress=not args.no_progress
        )
        verb = "merged"
    else:
        rows = run(config, out, resume=args.resume, fresh=args.fresh, progress=not args.no_progress)
        verb = "measured"
    print(summary(rows))
    counts = {s: sum(r[Col.STATUS] == s for r in rows) for s in STATUSES}
    took = time.perf_counter() - start
    tally = ", ".join(f"{v} {k}" for k, v in counts.items())
    print(f"\n{len(rows)} rows {verb} ({tally}) in {took:.0f} s -> {out / RESULTS}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import build_report
    from .store import ensure_folder

    ensure_folder(args.out)
    path = build_report(args.sources, args.out, paper=not args.no_paper, figures=not args.no_figures)
    print(f"wrote {path}")
    return 0


def _paper_table(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .paper import table1_markdown, write
    from .store import ensure_folder
    from .table import PAPER

    print(table1_markdown())
    if args.out:
        write(ensure_folder(args.out))
        print(f"-> {Path(args.out) / PAPER}")
    return 0


def _asv_table(args: argparse.Namespace) -> int:
    from .asv_results import read

    df = read(args.results_dir)
    cols = ["benchmark", "params", "value", "unit", Col.STATUS, Col.COMMIT, Col.MACHINE]
    view = df[cols].assign(commit=df[Col.COMMIT].str[:8])
    print(view.to_markdown(index=False, disable_numparse=True) if len(view) else "(no results)")
    return 0


def _versus(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .errors import UserError
    from .store import ready_to_write
    from .versus import main as versus

    if args.resume and not args.out:
        raise UserError("--resume needs --out (the folder whose versus.csv it continues)")
    if args.out:
        ready_to_write(args.out, args.command)
    results, _ = versus(
        args.contests,
        args.dims,
        args.naf_dims,
        batch=args.batch,
        rounds=args.rounds,
        min_rounds=args.min_rounds,
        contexts=args.context,
        out=Path(args.out) if args.out else None,
        entrants=args.contest or [],
        deadline_s=args.deadline,
        resume=args.resume,
        frameworks=args.frameworks,
    )
    verdicts = [r["verdict"] for r in results]
    counts = ", ".join(f"{verdicts.count(v)} {v}" for v in ("faster", "no clear difference", "slower"))
    print(
        f"\nours against the fastest peer, 95% intervals over rounds: {counts} (of {len(results)} contests measured now"
        + (", those kept from the earlier run in the table)" if args.resume else ")")
    )
    return 0


def _solvers(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .algorithms import main as algorithms
    from .errors import UserError
    from .models import NAMES
    from .store import ready_to_write

    if args.resume and not args.out:
        raise UserError("--resume needs --out (the folder whose solvers.csv it continues)")
    if args.out:
        ready_to_write(args.out, args.command)
    algorithms(
        args.models or list(NAMES),
        args.dims,
        batch=args.batch,
        rounds=args.rounds,
        max_call_s=args.max_call_s,
        out=Path(args.out) if args.out else None,
        resume=args.resume,
        deadline_s=args.deadline,
    )
    return 0


def _check(args: argparse.Namespace) -> int:
    from pathlib import Path

    from . import check, registry
    from .grid import GROUPS
    from .store import ready_to_write
    from .table import CHECKS

    specs = list(dict.fromkeys(m for name in args.spec for m in GROUPS.get(name, (name,))))
    if args.out:
        ready_to_write(args.out, args.command)
    config = dict(args.config or [])
    for spec in specs:  # refused before any check runs: an unknown name, a module that does not import, a key not taken
        registry.factory(spec)
        registry.check_config(spec, config)
    failures, ran, applicable = [], 0, 0
    for spec, family, library, results in check.run_isolated(specs, args.dims, config, args.deadline):
        print(f"{spec}: float64, seed 0\n")
        print(check.table(results) + "\n")
        failures += [f"{spec} {r.check} d={r.dim}" for r in results if r.passed is False]
        ran += sum(r.passed is not None for r in results)
        applicable += len(results)
        if args.out:
            check.write(Path(args.out), spec, family, library, results)
    verdict = "pass" if not failures and ran else "FAIL"
    print(
        f"{verdict}: {ran - len(failures)} of {ran} checks ran and passed, {len(failures)} failed, "
        f"{applicable - ran} reported only or not applicable"
        + (f" ({', '.join(failures)})" if failures else "")
        + ("; no check ran" if not ran else "")
    )
    if args.out:
        print(f"-> {Path(args.out) / CHECKS}")
    return 1 if verdict == "FAIL" and not args.exit_zero else 0


def _fit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .fit import SMOKE, TRACK, FitConfig, run, summary
    from .grid import GROUPS
    from .models import NAMES
    from .table import FIT

    models = [m for name in args.models or list(NAMES) for m in GROUPS.get(name, (name,))]
    fields = dict(models=list(dict.fromkeys(models)), threads=args.threads, isolate=not args.no_isolate)
    fields.update(model_config=dict(args.config or []), data_dir=args.data_dir)
    given = (("data", args.data), ("steps", args.steps), ("wall_s", args.wall), ("seeds", args.seeds))
    for key, value in given:
        if value is not None:
            fields[key] = value
    config = FitConfig.quick_profile(**fields) if args.quick else FitConfig(**fields)
    if args.executor:
        from .cluster import run as run_jobs

        cluster = _cluster(args)
        rows = run_jobs(TRACK, config, Path(args.out), cluster, args.resume, args.fresh, progress=not args.no_progress)
    else:
        rows = run(config, Path(args.out), resume=args.resume, fresh=args.fresh, progress=not args.no_progress)
    print(summary(rows))
    print(f"\n{len(rows)} fits -> {Path(args.out) / FIT}" + (f"\nnote: this was {SMOKE}" if config.quick else ""))
    return 0


def _readme(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .readme import main as readme

    changed = readme(Path(args.readme), Path(args.reports), check=args.check)
    if args.check and changed:
        print(f"stale generated blocks: {', '.join(changed)}; run `python -m harness readme`", file=sys.stderr)
        return 1
    print(("rewrote: " + ", ".join(changed)) if changed else "README blocks are up to date")
    return 0


def _cluster(args: argparse.Namespace):
    from .cluster import Cluster

    return Cluster(
        executor=args.executor,
        partition=args.slurm_partition,
        gpus_per_job=args.gpus_per_job,
        cpus_per_job=args.cpus_per_job,
        max_parallel=args.max_parallel,
        job_minutes=args.job_minutes,
    )


def _compare(args: argparse.Namespace) -> int:
    from .errors import UserError

    if args.run:
        if args.a or args.b:
            raise UserError("compare takes --run BASE [HEAD] or two folders A B, not both")
        if len(args.run) > 2:
            raise UserError(f"--run takes BASE and at most one HEAD, got {len(args.run)} revisions")
        from . import ab

        cfg = ab.RunConfig(
            base=args.run[0],
            head=args.run[1] if len(args.run) > 1 else ab.revisions.WORKTREE,
            repo=args.repo,
            processes=args.processes,
            rounds=args.rounds,
            block_s=args.block,
            inject=args.inject,
            min_effect=args.min_effect,
            out=args.out,
            resume=args.resume,
            fresh=args.fresh,
            progress=not args.no_progress,
        )
        for name, value in (("models", args.models), ("dims", args.dims), ("ops", args.ops)):
            if value:
                setattr(cfg, name, value)
        for name in ("batches", "solvers", "backends"):
            if getattr(args, name):
                setattr(cfg, name, getattr(args, name))
        code = ab.main(cfg)
        return 0 if args.exit_zero else code
    if not (args.a and args.b):
        raise UserError("compare needs two folders A B, or --run BASE [HEAD] (two git revisions timed in one run)")
    run_only = [f for f in ("models", "dims", "ops", "batches", "solvers", "backends", "repo") if getattr(args, f)]
    if run_only or args.resume or args.fresh or args.inject:
        raise UserError(f"--{(run_only or ['resume'])[0]} goes with --run; compare A B reads two finished folders")
    from pathlib import Path

    from .compare import main as compare

    drift = Path(args.drift) if args.drift else None
    if drift is not None and not drift.is_file():
        raise UserError(f"--drift {args.drift!r} is not a file")
    rows, _ = compare(args.a, args.b, args.min_effect, args.out, drift, args.across_machines)
    slower = int((rows["verdict"] == "slower").sum())
    return 1 if slower and not args.exit_zero else 0


COMMANDS = {
    "compare": _compare,
    "models": _models,
    "sweep": _sweep,
    "fit": _fit,
    "report": _report,
    "paper-table": _paper_table,
    "versus": _versus,
    "solvers": _solvers,
    "check": _check,
    "readme": _readme,
    "asv-table": _asv_table,
}


def main(argv: list[str] | None = None) -> int:
    """Runs a command. A user error (a bad value, a missing or malformed file, a
    refusal) is one line and exit 2, as argparse's own; anything else is a bug and keeps
    its traceback."""
    import traceback
    import warnings

    from .errors import Interrupted, UserError

    warnings.formatwarning = lambda message, *_args, **_kwargs: f"warning: {message}\n"
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (UserError, OSError) as e:  # bad values or files the parser could not see: exit 2 like argparse
        if args.traceback:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"\n{e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
