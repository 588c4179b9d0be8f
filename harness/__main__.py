"""Command line: ``python -m harness {models,sweep,report,paper-table,asv-table}``."""

from __future__ import annotations

import argparse
import sys

from tabulate import tabulate


def _models(args: argparse.Namespace) -> int:
    from .measure.counting import count_params
    from .models import NAMES, build, keywords

    rows = []
    for name in NAMES:
        for dim in args.dims:
            m = build(name, dim)
            stored, effective = count_params(m)
            rows.append(
                [name, dim, m.cost.describe("log_prob"), m.cost.describe("sample"), stored, effective]
            )
    headers = ["model", "d", "log_prob", "sample", "params_stored", "params_effective"]
    print(tabulate(rows, headers, tablefmt="github", intfmt=","))
    print("\nconfig keywords: " + "; ".join(f"{n}: {', '.join(keywords(n))}" for n in NAMES))
    return 0


def _dims(text: str) -> list[int]:
    try:
        dims = [int(t) for t in text.split(",") if t]
    except ValueError:
        raise argparse.ArgumentTypeError(f"dims must be comma-separated ints, got {text!r}") from None
    if not dims or any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"dims must be ints >= 1, got {text!r}")
    return dims


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harness", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("models", help="list the reference models with their cost and size")
    m.add_argument("--dims", type=_dims, default=[2, 64, 256], help="comma list (default 2,64,256)")
    m.set_defaults(func=_models)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:  # bad values the parser could not see: exit 2 like argparse
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
