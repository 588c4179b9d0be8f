"""The one error a user is meant to read: a bad value, a missing file, a refusal.

The command line prints a :class:`UserError` as one line and exits 2, as argparse does
for what it can see; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """A bad value (naming it and the allowed ones), a missing or malformed file
    (naming it), or a refusal to overwrite or mix results (saying what to do)."""


class Interrupted(Exception):
    """Ctrl-C during a run; the rows measured so far are kept (``kept`` of them, in ``table``)."""

    def __init__(self, kept: int, table: object):
        super().__init__(f"interrupted: {kept} rows kept in {table}; continue with --resume")
        self.kept = kept
