"""The store's files: CSV tables and JSON, written whole or not at all, or appended a
row at a time. No torch here; :mod:`harness.store` keeps folders of them.

- **Tables** are CSV with csv's ``\\r\\n`` line ends and one row per line (line breaks
  inside a value are written as spaces). A whole table is written to a temporary file
  and renamed over the old one (:func:`write_table`); an appended table gets one row per
  write, flushed and synced (:class:`Appender`), so a kill leaves whole rows and at most
  one torn last line, which :func:`repair` cuts off by bytes. :func:`read_table` is the
  one reader, :func:`encode` the one writer's encoding.
- **JSON** files are written whole or not at all (:func:`write_json`).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

# ---- JSON -------------------------------------------------------------------------


def write_bytes(path: Path, data: bytes) -> None:
    """``data`` into ``path``, whole or not at all: a temporary file of a fresh name,
    created exclusively in the same folder (never a file or link planted there), renamed
    over ``path`` (a rename replaces a link at ``path`` itself, never what it points to)."""
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def publish(work: Path, folder: Path) -> None:
    """A finished folder ``work`` moved into place as ``folder``, whole (a rename within
    one parent); an older ``folder`` is replaced, one another process just published is
    kept (``work`` removed)."""
    import shutil

    if folder.exists() and not (folder / ".complete").exists():  # an earlier copy cut short
        shutil.rmtree(folder)
    try:
        os.rename(work, folder)
    except OSError:
        shutil.rmtree(work, ignore_errors=True)


def write_text(path: Path, text: str) -> None:
    """``text`` into ``path``, whole or not at all (:func:`write_bytes`)."""
    write_bytes(path, text.encode())


def inside(folder: Path, name: str, what: str) -> Path:
    """``folder / name`` for a name read from a table, refused in one line where it
    would lead out of ``folder`` (``..``, an absolute path, a link pointing away)."""
    path = (folder / name).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise UserError(f"{what} {name!r} leads outside {str(folder)!r}: refused")
    return path


def write_json(path: Path, data: object) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


@dataclass(frozen=True)
class Shape:
    """What a value read from a JSON file must be: ``about`` says it to the user;
    ``keys``: what the keys it names must hold, where present; ``each``: what every
    value of an object must hold."""

    about: str
    holds: Callable[[object], bool] = lambda v: True
    keys: dict[str, Shape] | None = None
    each: Shape | None = None

    def fault(self, value: object, where: str) -> str | None:
        """What is wrong with ``value`` (found at ``where``), or None."""
        if not self.holds(value) or (self.keys is not None or self.each is not None) and not isinstance(value, dict):
            found = json.dumps(value)
            return f"{where!r} holds {found if len(found) <= 40 else found[:37] + '...'}, not {self.about}"
        for key, inner in value.items() if isinstance(value, dict) else ():
            want = (self.keys or {}).get(key, self.each)
            why = want.fault(inner, f"{where}.{key}" if where else str(key)) if want is not None else None
            if why:
                return why
        return None


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _nothing_or(test: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda v: v is None or test(v)


OBJECT = Shape("an object", lambda v: isinstance(v, dict))
STRING = Shape("text or null", _nothing_or(lambda v: isinstance(v, str)))
FLAG = Shape("true, false or null", _nothing_or(lambda v: isinstance(v, bool)))
COUNT = Shape("a whole number above 0, or null", _nothing_or(lambda v: isinstance(v, int) and _number(v) and v > 0))
NUMBER = Shape("a number or null", _nothing_or(_number))
NUMBERS = Shape("a list of numbers, or null", _nothing_or(lambda v: isinstance(v, list) and all(map(_number, v))))
OBJECTS = Shape("a list of objects", lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v))


def fields(about: str, **keys: Shape) -> Shape:
    """An object whose named keys hold their shapes (others anything)."""
    return Shape(about, keys=keys)


def objects_of(inner: Shape) -> Shape:
    """An object each of whose values is ``inner``."""
    return Shape(f"an object whose every value is {inner.about}", each=inner)


def read_json(path: Path, kind: type = dict, missing: object = ..., shape: Shape | None = None) -> object:
    """A JSON file's contents of the expected top-level type; UserError naming the file
    otherwise. ``missing``: returned when the file does not exist (else an error).
    ``shape``: what its values must hold; another shape is one line naming the file,
    the key and what it should hold."""
    if not path.exists() and missing is not ...:
        return missing
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{str(path)!r} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{str(path)!r} is not valid JSON ({e})") from None
    if not isinstance(data, kind):
        raise UserError(f"{str(path)!r} holds a JSON {type(data).__name__}, not the {kind.__name__} expected")
    why = shape.fault(data, "") if shape is not None else None
    if why:
        raise UserError(f"{str(path)!r}: {why}: not a file this harness wrote")
    return data


# ---- tables -----------------------------------------------------------------------


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.replace("\r", " ").replace("\n", " ")
    return value


def encode(rows: Iterable[dict], columns: Sequence[str], header: bool = False) -> str:
    """CSV text of ``rows`` in ``columns`` (csv's ``\\r\\n`` line ends, one line per row;
    keys outside ``columns`` are ignored, missing ones blank)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\r\n")
    if header:
        writer.writeheader()
    writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
    return buffer.getvalue()


def write_table(path: Path, rows: Iterable[dict], columns: Sequence[str]) -> None:
    """A whole CSV table, written atomically."""
    write_text(path, encode(rows, columns, header=True))


def repair(path: Path) -> int:
    """Cuts a torn last line (no line end: a kill or a full disk mid-write) off the
    file, measured on its bytes; returns the bytes cut."""
    with path.open("rb+") as f:
        data = f.read()
        if not data or data.endswith(b"\n"):
            return 0
        if b"\n" not in data or b"\r" in data[data.rfind(b"\n") + 1 : -1]:
            # CR-only (or mixed) line ends: not a table this store wrote; cutting would lose whole rows
            raise UserError(f"{str(path)!r} has lines ended by CR alone, not CRLF or LF: refused, nothing cut")
        keep = data.rfind(b"\n") + 1
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return len(data) - keep


def read_table(
    path: Path, columns: Sequence[str] | None = None, *, strict: bool = True, key: Sequence[str] = ()
) -> list[dict]:
    """The rows of a CSV table as dicts (every value a string).

    ``columns``: the header the table must have (else a UserError naming what is missing
    and extra). A line whose field count differs from the header's, or a torn last line,
    is an error naming the file and line when ``strict``; otherwise it is left out with a
    warning. ``key``: columns that name a row once; a repeated key is an error when
    ``strict``, else the first row is kept with a warning.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{str(path)!r} is missing") from None
    text = data.decode("utf-8", errors="replace")
    try:
        lines = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as e:  # a field over csv's limit (128 KiB), a NUL byte
        raise UserError(f"{str(path)!r} is not a table this harness wrote: {e}") from None
    if not lines:
        raise UserError(f"{str(path)!r} is empty: it has no header")
    header, body = lines[0], lines[1:]
    if columns is not None and header != list(columns):
        missing = [c for c in columns if c not in header]
        extra = [c for c in header if c not in columns]
        raise UserError(
            f"{str(path)!r} has other columns than this version writes (missing: {', '.join(missing) or 'none'}; "
            f"extra: {', '.join(extra) or 'none'}, or another order); use the version that wrote it, or "
            "start anew with --fresh"
        )
    torn = bool(data) and not data.endswith(b"\n") and len(lines) > 1
    rows, seen = [], set()

    def bad(message: str) -> None:
        if strict:
            raise UserError(message)
        warnings.warn(message, stacklevel=3)

    for number, fields in enumerate(body, start=2):
        if torn and number == len(lines):
            bad(f"{path}:{number}: a torn last line (no line end); row left out")
            continue
        if len(fields) != len(header):
            bad(f"{path}:{number}: {len(fields)} fields, not {len(header)}; row left out")
            continue
        row = dict(zip(header, fields))
        if key:
            k = tuple(row.get(c, "") for c in key)
            if k in seen:
                bad(f"{path}:{number}: repeats the key {k} of an earlier row; row left out")
                continue
            seen.add(k)
        rows.append(row)
    return rows


def count_rows(path: Path) -> int:
    """Whole rows in a table now (the header and a torn last line not counted)."""
    if not path.exists():
        return 0
    return max(path.read_bytes().count(b"\n") - 1, 0)


class Appender:
    """Appends rows to a CSV table one at a time, each as one write, flushed and synced."""

    def __init__(self, path: Path, columns: Sequence[str], *, new: bool):
        self.path, self.columns = path, list(columns)
        if path.is_symlink():  # never write through a link this store did not make
            raise UserError(f"{str(path)!r} is a symbolic link: refused (a table is a file of its folder)")
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if new else os.O_APPEND) | getattr(os, "O_NOFOLLOW", 0)
        self._file = os.fdopen(os.open(path, flags, 0o644), "w", newline="")
        if new:
            self._write(encode([], self.columns, header=True))

    def _write(self, text: str) -> None:
        self._file.write(text)
        self._file.flush()
        os.fsync(self._file.fileno())

    def write(self, row: dict) -> None:
        self._write(encode([row], self.columns))

    def write_all(self, rows: Iterable[dict]) -> None:
        text = encode(rows, self.columns)
        if text:
            self._write(text)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
