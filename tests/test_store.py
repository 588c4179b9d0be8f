"""The store under every command: torn lines cut on bytes, --fresh moves everything
aside, a folder holds one kind of run, workers die with their parent, counts follow
the code that ran, and one reader, writer and lock serve every module."""

from __future__ import annotations

import ast
import csv
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import fit, measurer, store, sweep
from harness.__main__ import main
from harness.cluster import Cluster
from harness.cluster import run as run_jobs
from harness.errors import UserError
from harness.grid import Config
from harness.table import COLUMNS, FIT_COLUMNS, FIT_KEY, KEY, Col

ROOT = Path(__file__).resolve().parents[1]


def _lines(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_bytes().decode(), newline="")))


def _keys(path: Path, columns: list[str], key: tuple[str, ...]) -> list[tuple[str, ...]]:
    lines = _lines(path)
    assert lines[0] == columns
    assert all(len(line) == len(columns) for line in lines), "a fused or short line"
    return sorted(tuple(dict(zip(columns, r))[k] for k in key) for r in lines[1:])


def _cuts(path: Path) -> range:
    """Every byte offset inside the table's last line, its line end included."""
    full = path.read_bytes()
    assert full.endswith(b"\r\n"), "tables are written with csv's line ends"
    return range(full[:-1].rfind(b"\n") + 1, len(full))


# the cuts a command's resume is run after: the line's first bytes, a field's middle, and
# either side of its line end (every other offset is the store's repair alone, below)
def _some(cuts: range) -> list[int]:
    return [cuts[0], cuts[1], cuts[len(cuts) // 2], cuts[-2], cuts[-1]]


def test_a_torn_last_line_at_any_byte_is_cut_and_the_row_written_again(tmp_path):
    """The store's part of every resume, at every offset of a real sweep's last line:
    repair cuts exactly the torn line, and the row appended again leaves the table as
    it was, every line whole."""
    from harness.table import RESULTS_TABLE

    path = tmp_path / "results.csv"
    shutil.copy2(ROOT / "reports" / "cpu" / "results.csv", path)
    full, rows = path.read_bytes(), store.read_table(path, COLUMNS)
    cuts = _cuts(path)
    for cut in cuts:
        path.write_bytes(full[:cut])
        assert store.repair(path) == (cut - cuts[0] if cut > cuts[0] else 0), cut
        assert store.read_table(path, COLUMNS, key=RESULTS_TABLE.key) == rows[:-1], cut
        table = store.Appender(path, COLUMNS, new=False)
        table.write(rows[-1])
        table.close()
        assert path.read_bytes() == full, cut
    assert len(cuts) > 100


def _tear(path: Path, resume, columns: list[str], key: tuple[str, ...]) -> None:
    """Cuts the table's last line at :func:`_some` offsets, resumes twice after each cut,
    and checks the table against the uninterrupted one: the same keys once each."""
    full, expected = path.read_bytes(), _keys(path, columns, key)
    for cut in _some(_cuts(path)):
        path.write_bytes(full[:cut])
        resume()
        resume()
        assert _keys(path, columns, key) == expected, cut


def test_a_torn_results_line_is_cut_and_measured_again(tmp_path, monkeypatch, capsys):
    def measured(model, op, *args, **kwargs):
        return dict(status="ok", reason="", median_s=1e-3, iqr_s=1e-5, runs=3), None

    monkeypatch.setattr(measurer, "measure", measured)
    config = Config(
        models=("maf",), dims=(2, 3), ops=("log_prob",), batches=(8,), device="cpu"
    )  # one op: cheap resumes
    config.flops = config.memory = config.isolate = config.roofline = False
    config.min_run_time = 0.001  # the rounds of each resume: any time will do
    sweep.run(config, tmp_path, progress=False)
    _tear(tmp_path / "results.csv", lambda: sweep.run(config, tmp_path, resume=True, progress=False), COLUMNS, KEY)
    assert "cut a torn last line" in capsys.readouterr().err


def test_a_torn_fit_line_is_cut_and_fitted_again(tmp_path, monkeypatch):
    def fitted(name, ds, config, seed, out, on_eval=None):
        row = dict(test_nll=1.0 + len(name), test_nll_se=0.01, steps=3, nll_units=ds.units, params_stored=7)
        return row, [{Col.STEP: 1, Col.WALL_S: 0.1, Col.TRAIN_NLL: 2.0, Col.VAL_NLL: 2.0, Col.LEARNING_RATE: 0.01}], []

    from harness import training

    monkeypatch.setattr(training, "fit_one", fitted)
    monkeypatch.setattr(fit, "truth_grids", lambda data, out: None)
    config = fit.FitConfig(models=("made", "maf"), data=("eight_gaussians",), seeds=(0,), isolate=False)
    fit.run(config, tmp_path, progress=False)
    resume = lambda: fit.run(config, tmp_path, resume=True, progress=False)  # noqa: E731
    _tear(tmp_path / "fit.csv", resume, FIT_COLUMNS, FIT_KEY)
    curves = store.read_table(tmp_path / "curves.csv")
    assert sorted((r[Col.MODEL], r[Col.DATA]) for r in curves) == [
        ("made", "eight_gaussians"),
        ("maf", "eight_gaussians"),
    ]


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (but previous/ and the locks), by relative path."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and "previous" not in p.relative_to(folder).parts and not p.name.startswith(".")
    }


@pytest.mark.slow
def test_fit_fresh_moves_every_file_of_the_old_fit_aside(tmp_path):
    config = fit.FitConfig(models=("made",), data=("eight_gaussians",), seeds=(0,), steps=10, eval_every=5, time_s=0.01)
    config.time_batch = 64
    fit.run(config, tmp_path, progress=False)
    before = _files(tmp_path)
    assert {"fit.csv", "fit.json", "curves.csv", "checkpoints/made__eight_gaussians__s0.pt"} <= set(before)
    assert "nll/made__eight_gaussians__s0.npy" in before
    assert "densities/made__eight_gaussians.npy" in before and "densities/truth__eight_gaussians.npy" in before
    fit.run(config, tmp_path, fresh=True, progress=False)
    (aside,) = (tmp_path / "previous").iterdir()
    assert _files(aside) == before, "every old file, byte for byte, in previous/<time>/"
    assert set(_files(tmp_path)) == set(before)


@pytest.mark.slow
def test_a_folder_holds_one_kind_of_run(tmp_path):
    """An executor's --fresh over a direct sweep moves all of it aside; a direct
    --resume on the distributed folder is refused; the executor resumes it."""
    pytest.importorskip("submitit")
    config = Config(models=("made",), dims=(2,), ops=("log_prob",), batches=(8,), device="cpu", min_run_time=0.01)
    config.roofline = False  # the rates play no part here
    sweep.run(config, tmp_path, progress=False)
    before = _files(tmp_path)
    assert {"results.csv", "meta.json", "counts.json"} <= set(before)
    with pytest.raises(UserError, match="holds a direct run: resume it without --executor"):
        run_jobs(sweep.TRACK, config, tmp_path, Cluster(), resume=True, progress=False)
    rows = run_jobs(sweep.TRACK, config, tmp_path, Cluster(), fresh=True, progress=False)
    assert len(rows) == 1 and rows[0][Col.STATUS] == "ok"
    (aside,) = (tmp_path / "previous").iterdir()
    assert _files(aside) == before
    with pytest.raises(UserError, match="holds a distributed run: resume it with --executor"):
        sweep.run(config, tmp_path, resume=True, progress=False)
    assert run_jobs(sweep.TRACK, config, tmp_path, Cluster(), resume=True, progress=False) == rows


HANGING = '''
import time
import torch


class Hang(torch.nn.Module):
    """A flow whose log_prob never returns."""

    def __init__(self, dim):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(dim))

    def log_prob(self, x):
        while True:
            time.sleep(0.05)


def make(dim):
    return Hang(dim)
'''


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads processes from /proc")
def test_no_process_of_a_killed_sweep_outlives_it(tmp_path):
    (tmp_path / "hanging_flow.py").write_text(HANGING)
    out = tmp_path / "out"
    args = ["--models", "hanging_flow:make", "--dims", "2", "--ops", "log_prob", "--device", "cpu", "--no-progress"]
    parent = subprocess.Popen(
        [sys.executable, "-m", "harness", "sweep", *args, "--out", str(out)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 60
    while time.time() < deadline and not store.busy(out / ".worker.lock"):  # the worker is measuring
        time.sleep(0.05)
    assert store.busy(out / ".worker.lock"), "the worker never started"
    family = _descendants(parent.pid)
    assert family
    os.kill(parent.pid, signal.SIGKILL)  # the parent alone: its worker must follow it
    parent.wait()
    deadline = time.time() + 10  # the worker notices within a second or two
    while time.time() < deadline and any(_alive(pid) for pid in family):
        time.sleep(0.1)
    assert not [pid for pid in family if _alive(pid)], "a process of the killed sweep is still running"
    assert not store.busy(out / ".worker.lock")
    assert b"Traceback" not in parent.stderr.read()


SWEEP_ARGS = ["--models", "maf", "--dims", "2", "--ops", "log_prob", "--batch", "8", "--device", "cpu"]
SWEEP_ARGS += ["--no-memory", "--no-roofline", "--no-isolate", "--no-progress", "--budget", "5"]


def _sweeps_in(tree: Path, code: str) -> None:
    """``code`` in one process of the copied tree, ``sweep(out)`` running its sweep command."""
    prelude = f"from harness.__main__ import main\nsweep = lambda out: main(['sweep', *{SWEEP_ARGS!r}, '--out', out])\n"
    done = subprocess.run([sys.executable, "-c", prelude + code], cwd=tree, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_an_uncommitted_change_to_a_model_recounts_its_flops(tmp_path):
    """Counts are cached under a hash of the code that ran: the cached value is used
    while the code is the same, and counted anew after a change nobody committed."""
    tree = tmp_path / "tree"
    # numba's cache (in __pycache__, stamped with the sources' copied mtimes) comes along: no kernel recompiles
    shutil.copytree(ROOT / "harness", tree / "harness", ignore=shutil.ignore_patterns("*.pyc"))
    # one process: the first sweep counts, a second one over counts made up (12345, a value no
    # count gives: seen again only if the cache is used) takes them
    a, b, c = (str(tmp_path / name) for name in "abc")
    _sweeps_in(
        tree,
        f"import json, os\nassert sweep({a!r}) == 0\n"
        f"counts = json.load(open(os.path.join({a!r}, 'counts.json')))\n"
        f"for key in counts: counts[key]['{Col.FLOPS}'] = 12345\n"
        f"for out in ({b!r}, {c!r}):\n    os.mkdir(out)\n"
        f"    json.dump(counts, open(os.path.join(out, 'counts.json'), 'w'))\n"
        f"assert sweep({b!r}) == 0\n",
    )
    first = store.read_table(tmp_path / "a" / "results.csv")[0]
    assert store.read_table(tmp_path / "b" / "results.csv")[0][Col.FLOPS] == "12345", (
        "the same code takes the cached count"
    )
    maf = tree / "harness" / "models" / "maf.py"
    text = maf.read_text()
    changed = text.replace("        out = self.made.columns(uT)\n", "        out = self.made.columns(uT) * 1.0\n")
    assert changed != text
    maf.write_text(changed)
    _sweeps_in(tree, f"assert sweep({c!r}) == 0\n")  # a new process: the changed code
    again = store.read_table(tmp_path / "c" / "results.csv")[0]
    assert int(again[Col.FLOPS]) > int(first[Col.FLOPS]), "the changed forward is counted, not taken from the cache"


def test_cli_errors_are_one_line_for_users_and_tracebacks_for_bugs(tmp_path, monkeypatch, capsys):
    for command in ("sweep", "fit"):
        with pytest.raises(SystemExit) as e:
            main([command, "--out", str(tmp_path), "--resume", "--fresh"])
        assert e.value.code == 2 and "not allowed with argument" in capsys.readouterr().err

    def refused(*args, **kwargs):
        raise UserError("a refusal the user can act on")

    monkeypatch.setattr(sweep, "run", refused)
    args = ["sweep", "--quick", "--models", "maf", "--out", str(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err == "error: a refusal the user can act on\n"
    assert main(["--traceback", *args]) == 2 and "Traceback" in capsys.readouterr().err

    def bug(*args, **kwargs):
        raise ValueError("a bug")

    monkeypatch.setattr(sweep, "run", bug)
    with pytest.raises(ValueError, match="a bug"):  # not turned into a one-line error
        main(args)


def _imports(path: Path) -> set[str]:
    """The modules a file imports, relative ones as written (``.sweep``, ``..store``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add("." * node.level + node.module)
        elif isinstance(node, ast.ImportFrom):  # from . import a, b
            found |= {"." * node.level + a.name for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def test_one_core_under_every_command():
    harness = ROOT / "harness"
    for module in ("fit.py", "cluster.py"):
        imported = _imports(harness / module)
        assert not imported & {".sweep", ".grid", ".measurer", "harness.sweep"}, module
    assert ".fit" not in _imports(harness / "cluster.py")
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in harness.rglob("*.py")}
    assert not {p: n for p, n in sizes.items() if n > 450}, "a module past 450 lines does more than one job"
    text = {str(p.relative_to(ROOT)): p.read_text() for p in harness.rglob("*.py")}
    readers = [p for p, t in text.items() if "csv" in _imports(ROOT / p) or "to_csv" in t]
    readers += [p for p, t in text.items() if "read_csv" in t and not p.startswith("harness/data/")]
    assert readers == ["harness/records.py"], "one CSV reader and one writer (the data sets' own files aside)"
    assert [p for p, t in text.items() if "fcntl" in t] == ["harness/store.py"], "one lock implementation"
    renames = [p for p, t in text.items() if ".tmp" in t or "os.replace" in t or "os.rename" in t]
    assert renames == ["harness/records.py"], "one atomic write"


def test_the_lock_names_its_holder(tmp_path):
    with store.lock(tmp_path, "fit", "fitting maf on digits"):
        with pytest.raises(UserError) as e:
            with store.lock(tmp_path, "sweep"):
                pass
    message = str(e.value)
    assert f"(fit, pid {os.getpid()}; since " in message and "fitting maf on digits" in message
    with store.lock(tmp_path, "sweep"):  # let go of at the end of the block
        pass


def test_json_that_is_not_an_object_is_named(tmp_path):
    (tmp_path / "meta.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="meta.json' holds a JSON list, not the dict expected"):
        store.read_json(tmp_path / "meta.json")
