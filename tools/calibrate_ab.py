"""How often is compare --run wrong? Runs it on identical code (A/A) and with injected
slowdowns of B, all with the default settings, then counts verdicts with 95% binomial
(Clopper-Pearson) intervals into OUT/CALIBRATION.md and OUT/calibration.json.

    python tools/calibrate_ab.py --out reports/cpu/ab --aa 5 --slow 0.10:2 --slow 0.25:2
    python tools/calibrate_ab.py --out reports/cpu/ab --summarize-only

Each run is ``python -m harness compare --run HEAD HEAD [--inject F]`` into
OUT/runs/<name>/ (kept: rounds.csv, ab.json, compare.md), resumed if cut short.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from scipy.stats import binomtest

sys.path.insert(0, str(Path(__file__).parents[1]))

from harness import ab  # noqa: E402
from harness.records import read_json, write_json, write_text  # noqa: E402
from harness.table import AB_META  # noqa: E402


def run(out: Path, name: str, inject: float) -> None:
    folder = out / "runs" / name
    if (folder / "compare.md").exists():
        return
    again = ["--resume"] if (folder / "rounds.csv").exists() else []
    cmd = [sys.executable, "-m", "harness", "compare", "--run", "HEAD", "HEAD", "--out", str(folder), "--no-progress"]
    cmd += [*again, "--inject", str(inject)] if inject else again
    start = time.monotonic()
    subprocess.run(cmd, check=False)
    meta = read_json(folder / AB_META)
    meta["wall_s"] = time.monotonic() - start
    write_json(folder / AB_META, meta)


def ci(k: int, n: int) -> str:
    if n == 0:
        return "-"
    low, high = binomtest(k, n).proportion_ci(0.95)
    return f"{k} of {n} ({k / n:.0%}) [{low:.0%}, {high:.0%}]"


def summarize(out: Path) -> dict:
    groups: dict[float, dict] = {}
    for folder in sorted((out / "runs").glob("*")):
        if not (folder / "compare.md").exists():
            continue
        meta = read_json(folder / AB_META)
        inject = float(meta["config"].get("inject", 0.0))
        table = ab.analyse(ab.read_rounds(folder), meta["config"].get("min_effect", 0.05))
        g = groups.setdefault(inject, dict(runs=[], n=0, slower=0, faster=0, held=0))
        g["n"] += len(table)
        g["slower"] += int((table["verdict"] == "slower").sum())
        g["faster"] += int((table["verdict"] == "faster").sum())
        g["held"] += int(((table["verdict"] == "slower") & table["holds"]).sum())
        load = [meta.get("load_at_start", [None])[0], meta.get("load_end", [None])[0]]
        g["runs"].append(dict(name=folder.name, configurations=len(table), wall_s=meta.get("wall_s"), load=load))
    lines = [
        "# compare --run, calibrated",
        "",
        "Made by `python tools/calibrate_ab.py` (this folder's runs/ holds every round). Each run is "
        "`python -m harness compare --run HEAD HEAD` with the default settings (made, maf, iaf, naf, bnaf; d = 8, 32; "
        "log_prob and sample; batch 64; 5 trials x up to 20 rounds): identical code on both sides (A/A), or B "
        "given extra arithmetic worth 10% or 25% of A's call (`--inject`). Intervals: 95% Clopper-Pearson over "
        "configurations.",
        "",
        "| B against A | configurations | any verdict | slower | slower, holding under Holm | faster |",
        "|---|---|---|---|---|---|",
    ]
    for inject, g in sorted(groups.items()):
        what = "identical (A/A)" if not inject else f"{inject:.0%} slower (injected)"
        lines.append(
            f"| {what} | {g['n']} | {ci(g['slower'] + g['faster'], g['n'])} | {ci(g['slower'], g['n'])} | "
            f"{ci(g['held'], g['n'])} | {ci(g['faster'], g['n'])} |"
        )
    lines += ["", "| run | configurations | wall s | load (1-min) start -> end |", "|---|---|---|---|"]
    for g in groups.values():
        for r in g["runs"]:
            load = " -> ".join(f"{x:.2f}" for x in r["load"] if x is not None)
            lines.append(f"| {r['name']} | {r['configurations']} | {r['wall_s'] or 0:.0f} | {load} |")
    write_text(out / "CALIBRATION.md", "\n".join(lines) + "\n")
    data = {str(k): v for k, v in groups.items()}
    write_json(out / "calibration.json", data)
    print("\n".join(lines))
    return data


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--aa", type=int, default=5, help="A/A runs (default 5)")
    p.add_argument("--slow", action="append", default=[], help="FRACTION:RUNS of injected slowdowns (repeatable)")
    p.add_argument("--summarize-only", action="store_true")
    args = p.parse_args()
    out = Path(args.out)
    if not args.summarize_only:
        plan = [(f"aa-{i}", 0.0) for i in range(args.aa)]
        for spec in args.slow:
            fraction, _, runs = spec.partition(":")
            plan += [(f"slow{float(fraction):.2f}-{i}", float(fraction)) for i in range(int(runs or 1))]
        for name, inject in plan:
            run(out, name, inject)
    summarize(out)
    json.dumps({})


if __name__ == "__main__":
    main()
