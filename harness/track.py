"""A track: a kind of run that writes rows into a folder of the store (the sweep, the
fit). :mod:`harness.cluster` runs any track as jobs through this protocol alone."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .table import TableSpec


@dataclass(frozen=True)
class Track:
    """What the cluster needs of a track.

    Attributes:
        name: ``sweep`` or ``fit`` (lock messages, job names).
        tables: its tables, the main one first; each job writes them and the merge
            gathers them, one row per key and machine.
        meta: its settings file.
        folders: subfolders each job writes and the merge gathers (checkpoints).
        jobs: ``jobs(config)`` -> [(job name, job config)], in order.
        run: ``run(config, out, resume=, fresh=, progress=)`` -> the rows written now:
            one job, or a direct run.
        device: ``device(config)`` -> ``cpu`` or ``cuda``, for the job's machine name.
        validate: ``validate(config, here)`` raises a UserError for a bad config; with
            ``here`` False the devices are checked where the job runs, not here.
    """

    name: str
    tables: tuple[TableSpec, ...]
    meta: str
    folders: tuple[str, ...]
    jobs: Callable[[Any], list[tuple[str, Any]]]
    run: Callable[..., list[dict]]
    device: Callable[[Any], str]
    validate: Callable[[Any, bool], None]

    def job(self, config: Any, folder: Path) -> list[dict]:
        """One job into its own folder, resuming what an earlier attempt left there."""
        resume = (folder / self.tables[0].name).is_file()
        return self.run(config, folder, resume=resume, fresh=False, progress=False)
