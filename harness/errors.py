"""The one error a user is meant to read: a bad value, a missing file, a refusal.

The command line prints a :class:`UserError` as one line and exits 2, as argparse does
for what it can see; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """A bad value (naming it and the allowed ones), a missing or malformed file
    (naming it), or a refusal to overwrite or mix results (saying what to do)."""
