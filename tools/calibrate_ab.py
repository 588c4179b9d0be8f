"""How often is compare --run wrong? Runs it on identical code (A/A) and with injected
slowdowns of B, all with the default settings, then counts verdicts with 95% binomial
(Clopper-Pearson) intervals into OUT/CALIBRATION.md and OUT/calibration.json.

    python tools/calibrate_ab.py --out reports/cpu/ab --aa 5 --slow 0.10:2 --slow 0.25:2
    python tools/calibrate_ab.py --out reports/cpu/ab --summarize-only
    python tools/calibrate_ab.py --out reports/cpu/ab --drift RUN1 RUN2

--drift: two sweep folders of one commit (two make report runs) give the drift bound
that compare A B judges runs measured apart by (OUT/drift.json): the 95th percentile,
over configurations, of |log(B / A)| of their medians.

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
    machine = "?"
    for folder in sorted((out / "runs").glob("*")):
        if not (folder / "compare.md").exists():
            continue
        meta = read_json(folder / AB_META)
        inject = float(meta["config"].get("inject", 0.0))
        table = ab.analyse(ab.read_rounds(folder), meta["config"].get("min_effect", 0.05))
        g = groups.setdefault(inject, dict(runs=[], n=0, slower=0, faster=0, held=0, exits=0))
        g["n"] += len(table)
        g["slower"] += int((table["verdict"] == "slower").sum())
        g["faster"] += int((table["verdict"] == "faster").sum())
        held = int(((table["verdict"] == "slower") & table["holds"]).sum())
        g["held"] += held
        g["exits"] += held > 0  # the run's exit code is 1
        load = [meta.get("load_at_start", [None])[0], meta.get("load_end", [None])[0]]
        g["runs"].append(dict(name=folder.name, configurations=len(table), wall_s=meta.get("wall_s"), load=load))
        machine = f"{meta.get('cpu')} ({meta.get('cpu_count')} cores), torch {meta.get('torch')}"
    lines = [
        "# compare --run, calibrated",
        "",
        "Made by `python tools/calibrate_ab.py` (this folder's runs/ holds every round). Each run is "
        "`python -m harness compare --run HEAD HEAD` with the default settings (made, maf, iaf, naf, bnaf; d = 8, 32; "
        "log_prob and sample; batch 64; 5 trials x up to 20 rounds): identical code on both sides (A/A), or B "
        "given extra arithmetic worth 10% or 25% of A's call (`--inject`). Intervals: 95% Clopper-Pearson over "
        "configurations.",
        "",
        "| B against A | configurations | any verdict | slower | slower, holding under Holm | faster "
        "| runs exiting 1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for inject, g in sorted(groups.items()):
        what = "identical (A/A)" if not inject else f"{inject:.0%} slower (injected)"
        lines.append(
            f"| {what} | {g['n']} | {ci(g['slower'] + g['faster'], g['n'])} | {ci(g['slower'], g['n'])} | "
            f"{ci(g['held'], g['n'])} | {ci(g['faster'], g['n'])} | {g['exits']} of {len(g['runs'])} |"
        )
    lines += ["", f"Machine: {machine}; commit: every run's `ab.json`.", ""]
    lines += ["| run | configurations | wall s | load (1-min) start -> end |", "|---|---|---|---|"]
    for g in groups.values():
        for r in g["runs"]:
            load = " -> ".join(f"{x:.2f}" for x in r["load"] if x is not None)
            lines.append(f"| {r['name']} | {r['configurations']} | {r['wall_s'] or 0:.0f} | {load} |")
    write_text(out / "CALIBRATION.md", "\n".join(lines) + "\n")
    data = {str(k): v for k, v in groups.items()}
    write_json(out / "calibration.json", data)
    print("\n".join(lines))
    return data


def drift(out: Path, first: str, second: str, quantile: float = 0.95) -> dict:
    """Both calibrations from two sweeps of one commit: the drift bound of single ops'
    B / A, and the between-run spread of paired ratios (op / log_prob)."""
    import numpy as np

    from harness import compare
    from harness.intervals import Ratio, apart_verdict, between_runs

    rows = compare.compare(first, second, drift=None)
    logs = np.abs(np.log(rows["B / A"].astype(float)))
    bound = float(np.exp(np.quantile(logs, quantile)) - 1)
    flagged = sum(
        apart_verdict(Ratio(v, lo, hi, "", 5), bound) in ("slower", "faster")
        for v, lo, hi in zip(rows["B / A"], rows["low"], rows["high"])
    )
    pairs = compare.paired_ratios(first, second, rerun=False)

    def ratio(v) -> Ratio:
        return Ratio(v.value, v.low, v.high, v.how, 5)

    one, two = [ratio(f) for f, _ in pairs], [ratio(s) for _, s in pairs]
    sd = between_runs(one, two)
    raw_inside = sum(f.low <= s.value <= f.high for f, s in zip(one, two))
    metas = [read_json(Path(f) / "meta.json") for f in (first, second)]
    found = {
        "drift": bound,
        "quantile": quantile,
        "configurations": len(rows),
        "flagged_at_bound": int(flagged),
        "flagged_by_interval_and_5pct_alone": int((rows["low"] > 1.05).sum() + (rows["high"] < 1 / 1.05).sum()),
        "rerun_sd": sd,
        "paired_ratios": len(pairs),
        "paired_inside_before": int(raw_inside),
        "machine": f"{metas[0].get('cpu')} ({metas[0].get('cpu_count')} cores)",
        "runs": [{k: m.get(k) for k in ("commit", "date", "load_start", "load_end")} for m in metas],
        "folders": [str(first), str(second)],
    }
    write_json(out / "drift.json", found)
    print(json.dumps(found, indent=1))
    return found


def check_coverage(out: Path, folders: list[str]) -> None:
    """How often a run's paired ratios fall in an earlier run's rerun intervals, for
    every pair of ``folders`` (the first two calibrated the spread: in sample)."""
    from harness import calibration, compare

    calibration.load.cache_clear()
    found = calibration.load()
    lines = []
    for i, first in enumerate(folders):
        for j in range(i + 1, len(folders)):
            inside, total = compare.coverage(first, folders[j])
            raw = compare.paired_ratios(first, folders[j], rerun=False)
            before = sum(f.low <= s.value <= f.high for f, s in raw)
            sample = " (the calibration pair: in sample)" if (i, j) == (0, 1) else " (out of sample)"
            lines.append(
                f"- run {j + 1} in run {i + 1}'s intervals{sample}: {inside} of {total} ({inside / max(total, 1):.0%}) "
                f"of its paired op / log_prob ratios inside the stated 95% intervals for a rerun (between-run "
                f"spread {found.get('rerun_sd', 0):.3f} in log space); {before} of {len(raw)} "
                f"({before / max(len(raw), 1):.0%}) inside the rounds' paired intervals alone"
            )
            rows = compare.compare(first, folders[j], drift=found.get("drift"))
            judged = int(rows["verdict"].isin(["slower", "faster"]).sum())
            lines.append(
                f"- run {j + 1} against run {i + 1} by `compare A B`{sample}: {judged} of {len(rows)} configurations "
                f"({judged / max(len(rows), 1):.1%}) given a verdict past the drift bound "
                f"(±{found.get('drift', 0):.0%})"
            )
    print("\n".join(lines))
    write_text(out / "coverage.md", "\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--aa", type=int, default=5, help="A/A runs (default 5)")
    p.add_argument("--slow", action="append", default=[], help="FRACTION:RUNS of injected slowdowns (repeatable)")
    p.add_argument("--summarize-only", action="store_true")
    p.add_argument("--drift", nargs=2, metavar=("RUN1", "RUN2"), help="two sweep folders of one commit")
    p.add_argument("--coverage", nargs="+", metavar="RUN", help="a run, then reruns to check its intervals on")
    args = p.parse_args()
    out = Path(args.out)
    if args.drift:
        drift(out, *args.drift)
        return
    if args.coverage:
        check_coverage(out, args.coverage)
        return
    if not args.summarize_only:
        plan = [(f"aa-{i}", 0.0) for i in range(args.aa)]
        for spec in args.slow:
            fraction, _, runs = spec.partition(":")
            plan += [(f"slow{float(fraction):.2f}-{i}", float(fraction)) for i in range(int(runs or 1))]
        for name, inject in plan:
            run(out, name, inject)
    summarize(out)


if __name__ == "__main__":
    main()
