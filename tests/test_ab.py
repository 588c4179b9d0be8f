"""compare --run: two revisions in one run, by interleaved trials (harness.ab)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from harness import revisions
from harness.intervals import change_verdict, holm, over_processes

ROOT = Path(__file__).parents[1]

SLOWER_MAF = """

# test: every MAF's log_prob does its work three times (twice was found, but on a loaded
# two-core runner its interval over three trials did not always clear Holm's correction)
import functools as _functools

_build_maf_once = build_maf


@_functools.wraps(_build_maf_once)
def build_maf(*args, **kwargs):
    flow = _build_maf_once(*args, **kwargs)
    once = flow.log_prob

    def thrice(x):
        once(x)
        once(x)
        return once(x)

    flow.log_prob = thrice
    return flow
"""


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
    env["GIT_COMMITTER_EMAIL"] = "t@t"
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout


def compare(*args: str, cache: Path) -> subprocess.CompletedProcess:
    """``python -m harness compare --no-progress ARGS`` in this process (its trials are
    processes of their own), with revisions kept under ``cache``."""
    import contextlib
    import io

    from harness.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    before = os.environ.get("FLOWBENCH_CACHE")
    os.environ["FLOWBENCH_CACHE"] = str(cache)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["compare", "--no-progress", *args])
    finally:
        if before is None:
            os.environ.pop("FLOWBENCH_CACHE")
        else:
            os.environ["FLOWBENCH_CACHE"] = before
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def cells_of(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A repository holding this harness (commit 1) and the same with MAF's log_prob
    three times as slow (commit 2)."""
    repo = tmp_path_factory.mktemp("revisions") / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    files = git(ROOT, "ls-files", "-co", "--exclude-standard", "harness").split()
    for f in files:
        if (ROOT / f).is_file():
            (repo / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, repo / f)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "the harness")
    with open(repo / "harness" / "models" / "maf.py", "a") as f:
        f.write(SLOWER_MAF)
    git(repo, "commit", "-qam", "MAF log_prob thrice")
    return repo


def test_trials_import_the_two_sides_in_alternating_order_from_a_random_start():
    from harness.ab_trial import SIDES, import_order

    starts = set()
    for seed in range(20):
        orders = [import_order(seed, t) for t in range(6)]
        assert all(set(o) == set(SIDES) for o in orders)
        assert all(a != b for a, b in zip(orders, orders[1:]))  # three trials never share one order
        starts.add(orders[0])
    assert starts == {SIDES, SIDES[::-1]}  # which side goes first in trial 0 is drawn


def test_rename_moves_every_absolute_reference():
    src = "import harness\nfrom harness import ops\nx = 'harness.models.maf:build_maf'\n"
    src += "import harness.ops\nharness_version = 1\n"
    out = revisions.rename(src, "harness", "fb_a_x_harness")
    assert "from fb_a_x_harness import ops" in out
    assert "'fb_a_x_harness.models.maf:build_maf'" in out
    assert "import fb_a_x_harness.ops" in out
    assert "import fb_a_x_harness as harness" in out
    assert "harness_version = 1" in out  # a name that only starts the same is left alone


@pytest.mark.slow
def test_a_slower_revision_is_found_and_an_unchanged_flow_is_not(repo, tmp_path):
    out = tmp_path / "ab"
    common = ["--repo", str(repo), "--dims", "4", "--ops", "log_prob", "--batch", "64", "--processes", "3"]
    common += ["--rounds", "8"]
    done = compare("--run", "HEAD~1", "HEAD", "--models", "maf,made", *common, "--out", str(out), cache=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    cells = {c[0]: c for c in (cells_of(line) for line in done.stdout.splitlines() if line.startswith("| ma"))}
    assert cells["maf"][-2:] == ["slower", "yes"], done.stdout
    assert cells["made"][-2] not in ("slower", "faster"), done.stdout
    assert (out / "rounds.csv").exists() and (out / "compare.md").exists()
    # the ratios as a forest plot beside the table, named in it
    assert "![B / A per configuration](compare.png)" in (out / "compare.md").read_text()
    assert "<!-- maf log_prob d=4, cpu, batch 64 -->" in (out / "compare.svg").read_text()
    # resuming a finished run measures nothing more and gives the same table
    again = compare(
        "--run", "HEAD~1", "HEAD", "--models", "maf,made", *common, "--out", str(out), "--resume", cache=tmp_path
    )
    assert again.returncode == 1 and again.stdout.split("\n\n")[0] == done.stdout.split("\n\n")[0]


@pytest.mark.slow
def test_identical_revisions_are_an_a_a_run_without_a_verdict(repo, tmp_path):
    common = ["--repo", str(repo), "--dims", "2", "--ops", "log_prob", "--batch", "16", "--processes", "2"]
    common += ["--rounds", "6"]
    done = compare("--run", "HEAD", "HEAD", "--models", "maf", *common, "--out", str(tmp_path / "aa"), cache=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "A/A run" in done.stdout
    assert "| slower" not in done.stdout and "| faster" not in done.stdout
    for text in ("load (1-min average)", "AMD" if "AMD" in done.stdout else "cores", "2 trials x 6 rounds"):
        assert text in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    "run, message",
    [
        (["nope-rev", "HEAD"], "names no commit"),
        (["HEAD~1", "HEAD", "--models", "maf", "--solvers", "newton"], "belongs to no model"),
        (["HEAD", "HEAD", "--models", "nosuch"], "unknown model 'nosuch'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(repo, tmp_path, run, message):
    done = compare("--run", *run, "--repo", str(repo), "--out", str(tmp_path / "bad"), cache=tmp_path)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()  # nothing half-written


@pytest.mark.slow
def test_a_user_flow_that_fails_on_one_side_is_named_and_nothing_is_written(tmp_path):
    repo = tmp_path / "mine"
    repo.mkdir()
    git(repo, "init", "-q")
    shutil.copy2(ROOT / "examples" / "linear_flow.py", repo / "myflow.py")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "a flow")
    with open(repo / "myflow.py", "a") as f:
        f.write("\n\ndef make(dim, scale=0.3):\n    raise RuntimeError('broken at HEAD')\n")
    git(repo, "commit", "-qam", "broken")
    out = tmp_path / "out"
    args = ["--repo", str(repo), "--models", "myflow:make", "--dims", "3", "--ops", "log_prob", "--out", str(out)]
    done = compare("--run", "HEAD~1", "HEAD", *args, cache=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "side b (HEAD" in done.stderr and "broken at HEAD" in done.stderr
    assert not out.exists()
    bare = tmp_path / "bare"
    bare.mkdir()
    git(bare, "init", "-q")
    (bare / "x.txt").write_text("x")
    git(bare, "add", "-A")
    git(bare, "commit", "-qm", "no harness")
    done = compare("--run", "HEAD", "HEAD", "--repo", str(bare), "--out", str(out), cache=tmp_path)
    assert done.returncode == 2 and "holds neither this harness nor a flow" in done.stderr


def test_the_interval_over_processes_covers_at_its_level():
    """Each trial has its own offset (sd 3%) and noisy rounds: the t interval over
    trials covers the true ratio about 95% of the time, a bootstrap of rounds alone far less."""
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(400):
        logs = [list(rng.normal(0.1 + rng.normal(0, 0.03), 0.05, 20)) for _ in range(5)]
        t = over_processes(logs)
        covered += t.low <= np.exp(0.1) <= t.high
    assert 0.91 <= covered / 400 <= 0.99


def test_verdicts_need_the_interval_and_the_effect_and_holm_orders_them():
    from harness.intervals import Trials

    assert change_verdict(Trials(1.2, 1.1, 1.3, 0.001, 5, 100)) == "slower"
    assert change_verdict(Trials(1.03, 1.01, 1.05, 0.01, 5, 100)) == "no clear difference"  # real but small
    assert change_verdict(Trials(0.8, 0.7, 0.9, 0.001, 5, 100)) == "faster"
    assert change_verdict(Trials(1.5, 1.2, 1.8, 0.001, 2, 40)) == "too few processes"
    assert holm([0.001, 0.04, 0.5, float("nan")]) == [True, False, False, False]
    assert holm([0.01, 0.02]) == [True, True]
