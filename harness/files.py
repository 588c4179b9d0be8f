"""Output folders: checked before any work goes into them."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from pathlib import Path


def ensure_folder(path: str | Path, flag: str = "--out") -> Path:
    """Creates ``path`` if needed; ValueError naming it if it is a file or not writable."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ValueError(f"{flag} {str(path)!r} is a file, or lies under one; give a folder") from None
    except PermissionError:
        raise ValueError(f"{flag} {str(path)!r} cannot be created: permission denied") from None
    if not os.access(path, os.W_OK):
        raise ValueError(f"{flag} {str(path)!r} is not writable")
    return path


def write_table(path: Path, rows: Iterable[dict], columns: Sequence[str]) -> None:
    """A CSV table of ``rows`` in ``columns`` (the sweep's line ends), whole or not at all."""
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore", lineterminator="\r\n")
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)
