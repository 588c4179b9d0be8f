"""This checkout's flows against another checkout's, in one process: the same weights
and inputs, outputs compared, then both timed in interleaved rounds (a speed-up with a
95% bootstrap interval over rounds, paired).

    python tools/ab_kernels.py OLD_CHECKOUT naf:log_prob:64 naf:log_prob:256 maf:sample:256

OLD_CHECKOUT is a folder holding the other version's ``harness`` package (a git
worktree); it is imported under the name ``harness_old``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import torch

from harness.intervals import paired_ratio
from harness.measure.timing import time_rounds
from harness.models import build, op_call, op_context, unchecked


def old_package(checkout: Path):
    from harness.revisions import rename

    root = Path(tempfile.mkdtemp())
    shutil.copytree(checkout / "harness", root / "harness_old", ignore=shutil.ignore_patterns("__pycache__"))
    for path in (root / "harness_old").rglob("*.py"):  # its absolute self-references (factory strings) too
        path.write_text(rename(path.read_text(), "harness", "harness_old"))
    sys.path.insert(0, str(root))
    import harness_old.models

    return harness_old.models


def main(checkout: str, cases: list[str], rounds: int = 9, batch: int = 1024) -> None:
    old = old_package(Path(checkout))
    torch.set_num_threads(1)
    for case in cases:
        name, op, dim = case.split(":")
        dim = int(dim)
        torch.manual_seed(0)
        new_flow = build(name, dim).eval()
        old_flow = old.build(name, dim).eval()
        old_flow.load_state_dict(new_flow.state_dict())
        torch.manual_seed(1)
        x = torch.randn(batch, dim)
        fns = {"old": op_call(old_flow, op, x), "new": op_call(new_flow, op, x)}
        with op_context(new_flow, op), unchecked():
            a, b = fns["old"](), fns["new"]()
            dev = float(((a - b).abs() / (1 + a.abs())).max())
            times = time_rounds(fns, rounds=rounds, min_rounds=rounds, block_s=0.3, threads=1, max_s=float("inf"))
        r = paired_ratio(times["old"], times["new"])
        old_ms = sorted(times["old"])[len(times["old"]) // 2] * 1e3
        new_ms = sorted(times["new"])[len(times["new"]) // 2] * 1e3
        print(
            f"{name} {op} d={dim} batch {batch}: old {old_ms:.3g} ms, new {new_ms:.3g} ms, "
            f"old / new {r.show()} ({r.how}, {r.runs} rounds); max rel. deviation {dev:.2g}",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
