"""Every folder a command writes, and the rules it keeps it by. No torch here.

- **Files** are written whole or appended a row at a time (:mod:`harness.records`: the
  one CSV reader and writer); a resume cuts a torn last line off by bytes.
- **One lock** per folder (``flock`` on ``DIR/.lock``) held while a command writes it;
  a second writer is refused with the holder's pid, command and what it is doing.
- A folder holds a **direct** run or a **distributed** one (``plan.json``); a command
  of the other kind is refused.
- ``--fresh`` moves **everything** the store owns in a folder (tables, side tables,
  settings, counts, curves, checkpoints, density grids, job folders) into
  ``previous/<time>/`` (:func:`move_aside`); nothing measured is deleted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import UserError
from .records import Appender, count_rows, encode, read_json, read_table, repair, write_json, write_table, write_text
from .table import (
    AB_MD,
    AB_META,
    AB_ROUNDS,
    CHECKPOINTS,
    CHECKS,
    COUNTS,
    CURVES,
    DENSITIES,
    ERROR,
    FIT,
    FIT_META,
    LOCK,
    MACHINES,
    META,
    META_SHAPE,
    NLL,
    OK,
    PAPER,
    PLAN,
    POSTERIOR,
    PREVIOUS,
    RESULTS,
    SOLVERS,
    SOLVERS_MD,
    SUBMITIT,
    VERSUS,
    VERSUS_MD,
    Col,
    TableSpec,
)

# What the store owns in a folder: --fresh moves these aside, and nothing else (a
# report's pages, or another run's subfolder, are not the run's).
OWNED = (
    RESULTS,
    META,
    COUNTS,
    FIT,
    FIT_META,
    CURVES,
    POSTERIOR,
    CHECKPOINTS,
    DENSITIES,
    NLL,
    CHECKS,
    VERSUS,
    VERSUS_MD,
)
OWNED += (SOLVERS, SOLVERS_MD, PAPER, MACHINES, PLAN, SUBMITIT, AB_ROUNDS, AB_META, AB_MD)
DIRECT, DISTRIBUTED = "direct", "distributed"
__all__ = ["Appender", "Run", "count_rows", "encode", "lock", "move_aside", "read_json", "read_table", "repair"]
__all__ += ["side_table", "write_json", "write_table", "write_text"]

# ---- folders ----------------------------------------------------------------------


def ensure_folder(path: str | Path, flag: str = "--out") -> Path:
    """Creates ``path`` if needed; UserError naming it if it is a file or not writable."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"{flag} {str(path)!r} is a file, or lies under one; give a folder") from None
    except PermissionError:
        raise UserError(f"{flag} {str(path)!r} cannot be created: permission denied") from None
    if not os.access(path, os.W_OK):
        raise UserError(f"{flag} {str(path)!r} is not writable")
    return path


def ready_to_write(path: str | Path, what: str) -> Path:
    """Checks, before anything is measured, that ``path`` can take this command's
    tables: a folder, free of another writer's lock, with room for a row (a file made
    and removed). A UserError names what is wrong; nothing stays written."""
    import tempfile

    folder = ensure_folder(path)
    with lock(folder, what, "checking it can write here"):
        try:
            fd, probe = tempfile.mkstemp(prefix=".probe-", dir=folder)
            os.write(fd, b"0" * 4096)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise UserError(f"--out {str(folder)!r} cannot take a row: {e.strerror}") from None
    return folder


def slug(text: str) -> str:
    """A folder name from free text: lower-case letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:80] or "unknown"


def kept_rows(path: Path, columns: list[str], same: dict[str, object], unit: tuple[str, ...]) -> list[dict]:
    """The rows of a side table (solvers.csv, versus.csv) that ``--resume`` keeps: every
    ``unit`` (e.g. model and d) whose rows are all ok or error, none a timeout. A table
    measured with other ``same`` settings (e.g. the batch) is refused in one line."""
    if not path.exists():
        return []
    rows = read_table(path, columns)
    for field, value in same.items():
        found = sorted({r[field] for r in rows} - {"", str(value)})
        if found:
            raise UserError(f"{str(path)!r} was measured with {field} {', '.join(found)}, not {value}: give --fresh")
    again = {tuple(r[f] for f in unit) for r in rows if r[Col.STATUS] not in (OK, ERROR)}
    return [r for r in rows if tuple(r[f] for f in unit) not in again]


def kind(folder: Path) -> str | None:
    """``distributed`` (a plan or job folders), ``direct`` (a table of its own), or None."""
    if (folder / PLAN).exists() or (folder / MACHINES).is_dir():
        return DISTRIBUTED
    if any((folder / name).is_file() and (folder / name).stat().st_size for name in (RESULTS, FIT)):
        return DIRECT
    return None


def require_kind(folder: Path, wanted: str) -> None:
    """Refuses a folder that holds the other kind of run (a direct resume would write
    rows the next distributed merge drops; a merge would overwrite a direct table)."""
    found = kind(folder)
    if found is not None and found != wanted:
        how = "with --executor" if found == DISTRIBUTED else "without --executor"
        raise UserError(
            f"{str(folder)!r} holds a {found} run: resume it {how}, give another --out, or pass --fresh "
            f"to move it aside into {str(folder / PREVIOUS)!r}"
        )


def move_aside(folder: Path, names: tuple[str, ...] = OWNED) -> Path | None:
    """Moves everything the store owns in ``folder`` (or only ``names`` of it) into
    ``previous/<time>/``; returns that folder (None when there was nothing to move)."""
    present = [name for name in names if (folder / name).exists()]
    if not present:
        return None
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    aside = folder / PREVIOUS / stamp
    n = 1
    while aside.exists():
        n += 1
        aside = folder / PREVIOUS / f"{stamp}-{n}"
    aside.mkdir(parents=True)
    for name in present:
        shutil.move(str(folder / name), str(aside / name))
    return aside


# ---- the lock ---------------------------------------------------------------------


def _describe_holder(what: str, doing: str) -> str:
    command = " ".join(sys.argv) if sys.argv else ""
    since = dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    return json.dumps({"pid": os.getpid(), "what": what, "doing": doing, "since": since, "command": command})


def holder(folder: Path) -> str:
    """Who holds ``folder``'s lock, as a user reads it ('' when nobody says)."""
    try:
        info = json.loads((folder / LOCK).read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        return ""
    if not isinstance(info, dict):
        return ""
    parts = [f"{info.get('what', '?')}, pid {info.get('pid', '?')}", f"since {info.get('since', '?')}"]
    parts += [f"{info['doing']}"] if info.get("doing") else []
    parts += [f"`{info['command']}`"] if info.get("command") else []
    return "; ".join(parts)


@contextlib.contextmanager
def lock(folder: Path, what: str, doing: str = "", path: Path | None = None) -> Iterator[None]:
    """Holds ``folder/.lock`` (or ``path``) while the block runs; a second holder is
    refused with a UserError naming the first (its command and what it is doing)."""
    ensure_folder(folder)
    path = path or folder / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UserError(
            f"{str(folder)!r} is being written by another run ({holder(folder) or 'unknown'}); "
            "wait for it to end, or give another --out"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, _describe_holder(what, doing).encode(), 0)
        yield
    finally:
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def busy(path: Path) -> bool:
    """Whether some process holds the lock file ``path`` now."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def hold(path: Path, note: str, timeout_s: float = 60.0) -> int | None:
    """Holds the lock file ``path`` for the rest of this process's life (the kernel lets
    go of it when the process dies, however it dies); None if it stayed held by another
    process for ``timeout_s``."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                return None
            time.sleep(0.02)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{note}, pid {os.getpid()}\n".encode(), 0)
    return fd


def wait_free(path: Path, timeout_s: float) -> bool:
    """Waits until nobody holds the lock file ``path``; False if still held at the timeout."""
    deadline = time.monotonic() + timeout_s
    while busy(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# ---- a run's folder ---------------------------------------------------------------


class Run:
    """One command's table in its folder, kept by the store's rules: locked while
    written, a new table refused over an old one unless ``resume`` (keep its rows) or
    ``fresh`` (move the folder's contents aside), a resumed table checked against the
    settings and columns it was written with and repaired of a torn last line.
    ``meta(new)`` gives the settings file's environment (``new``: for a new table).

    Use as a context manager; ``rows`` are the rows kept from before.
    """

    def __init__(
        self,
        folder: Path,
        spec: TableSpec,
        *,
        what: str,
        meta_name: str,
        config: dict,
        meta: Callable[[bool], dict],
        resume: bool = False,
        fresh: bool = False,
        kind_wanted: str = DIRECT,
        doing: str = "",
    ):
        if resume and fresh:
            raise UserError("--resume and --fresh exclude each other: complete the table, or move it aside")
        self.folder, self.spec, self.what = Path(folder), spec, what
        self.meta_path = self.folder / meta_name
        self.config, self.meta, self.resume, self.fresh = config, meta, resume, fresh
        self.kind_wanted, self.doing = kind_wanted, doing
        self.rows: list[dict] = []
        self.moved: Path | None = None  # where --fresh moved the earlier contents
        self.appender: Appender | None = None
        self._lock: contextlib.AbstractContextManager | None = None

    @property
    def path(self) -> Path:
        return self.folder / self.spec.name

    def __enter__(self) -> Run:
        ensure_folder(self.folder)
        self._lock = lock(self.folder, self.what, self.doing)
        self._lock.__enter__()
        try:
            self._prepare()
        except BaseException:
            self._lock.__exit__(*sys.exc_info())
            raise
        return self

    def _prepare(self) -> None:
        if self.fresh:
            self.moved = move_aside(self.folder)
            if self.moved is not None:
                print(f"moved the earlier contents of {self.folder} aside into {self.moved}", file=sys.stderr)
        else:
            require_kind(self.folder, self.kind_wanted)
        exists = self.path.exists() and self.path.stat().st_size > 0
        if exists and not self.resume:
            raise UserError(
                f"{str(self.path)!r} already holds {count_rows(self.path)} rows: pass --resume to complete it, or "
                f"--fresh to move it aside into {str(self.folder / PREVIOUS)!r} and start anew"
            )
        if not exists:  # the settings first: a table never exists without them
            write_json(self.meta_path, {**self.meta(True), "config": self.config})
            self.appender = Appender(self.path, self.spec.columns, new=True)
            return
        self._check_settings()
        cut = repair(self.path)
        if cut:
            print(f"warning: {self.path}: cut a torn last line ({cut} bytes); it is measured again", file=sys.stderr)
        self.rows = read_table(self.path, self.spec.columns, strict=True, key=self.spec.key)
        first, now = read_json(self.meta_path, shape=META_SHAPE), self.meta(False)
        first.setdefault("resumed", []).append(
            {k: now.get(k) for k in ("date", Col.COMMIT, "dirty", "torch", "cpu", "load_start", "command")}
        )
        write_json(self.meta_path, first)
        self.appender = Appender(self.path, self.spec.columns, new=False)

    def _check_settings(self) -> None:
        if not self.meta_path.exists():
            raise UserError(f"{str(self.meta_path)!r} is missing: the settings of the rows to resume are unknown")
        old = read_json(self.meta_path, shape=META_SHAPE).get("config", {})
        new = json.loads(json.dumps(self.config))
        diff = [
            f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in self.spec.settings if old.get(k) != new.get(k)
        ]
        if diff:
            raise UserError(f"cannot resume {str(self.folder)!r} with other settings ({'; '.join(diff)})")

    def write(self, row: dict) -> None:
        assert self.appender is not None
        self.appender.write(row)

    def keep_only(self, rows: list[dict]) -> None:
        """Replaces the table by ``rows`` (whole or not at all), open for appending."""
        assert self.appender is not None
        self.appender.close()
        write_table(self.path, rows, self.spec.columns)
        self.rows = list(rows)
        self.appender = Appender(self.path, self.spec.columns, new=False)

    def update_meta(self, **fields: object) -> None:
        """Adds fields to the settings file, to the last resume's entry if resumed."""
        meta = read_json(self.meta_path, shape=META_SHAPE)
        (meta["resumed"][-1] if meta.get("resumed") else meta).update(fields)
        write_json(self.meta_path, meta)

    def __exit__(self, *exc: object) -> None:
        if self.appender is not None:
            self.appender.close()
        assert self._lock is not None
        self._lock.__exit__(*exc)


def side_table(folder: Path, spec: TableSpec, rows: list[dict], *, replace: dict | None = None, what: str) -> None:
    """Writes a side table (checks, contests, solver A/B) under the folder's lock:
    ``rows`` added to the rows already there, minus those whose ``replace`` columns
    match (a model checked again replaces its earlier rows)."""
    with lock(folder, what):
        path = folder / spec.name
        kept = read_table(path, spec.columns) if path.exists() else []
        if replace:
            kept = [r for r in kept if any(str(r.get(k)) != str(v) for k, v in replace.items())]
        write_table(path, [*kept, *rows], spec.columns)
