"""Two revisions' code side by side in one process: ``compare --run BASE HEAD``.

A revision of a git repository (this one by default, or a user's ``--repo``) is copied
out of git into a cache folder under a package name of its own, so that both sides
import in one interpreter and neither is the running harness:

- this harness at the revision: its ``harness/`` package as ``fb_<side>_<commit>_harness``;
- a user's flow ``module:factory`` at the revision: the module's top-level package (or
  single file) as ``fb_<side>_<commit>_<top>``.

Absolute references of the copied package to itself (``import harness.x``,
``from harness import``, ``"harness.models.maf:build_maf"``) are renamed with it, so a
side never reaches into the running harness by name. ``worktree`` (or ``.``) names the
working tree with its uncommitted changes (tracked and untracked, not ignored, files).
No torch here.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .records import publish

WORKTREE = "worktree"
WORKTREE_NAMES = (WORKTREE, ".")
HARNESS = "harness"
# What a side's harness must offer to be measured by this runner (its own code builds,
# prepares and runs each call): the registry and measure.call's prepare and Settings.
NEEDED = {"registry.py": "def build_any(", "measure/call.py": "def prepare("}


def cache_root() -> Path:
    """Where copied revisions are kept: $FLOWBENCH_CACHE, else ~/.cache/flowbench."""
    return Path(os.environ.get("FLOWBENCH_CACHE") or Path.home() / ".cache" / "flowbench") / "revisions"


def _git(repo: Path, *args: str, text: bool = True) -> str | bytes:
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=True, text=text)
    except FileNotFoundError:
        raise UserError("git is not installed: compare --run reads revisions with git") from None
    except subprocess.CalledProcessError as e:
        err = e.stderr if isinstance(e.stderr, str) else e.stderr.decode(errors="replace")
        raise UserError(f"git {' '.join(args)} failed in {str(repo)!r}: {err.strip().splitlines()[-1:]}") from None
    return out.stdout.strip() if text else out.stdout


def repository(path: str | Path | None) -> Path:
    """The top folder of the git repository at ``path`` (this checkout by default)."""
    where = Path(path) if path else Path.cwd()
    if not where.is_dir():
        raise UserError(f"--repo {str(where)!r} is not a folder")
    try:
        top = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        raise UserError(
            f"{str(where)!r} is not inside a git repository: compare --run compares its revisions"
        ) from None
    return Path(top)


@dataclass(frozen=True)
class Revision:
    """One side: the revision as asked, the commit it names (or the working tree's
    base commit and the hash of its uncommitted state), and a short label."""

    asked: str
    commit: str
    dirty: str = ""  # for the working tree: a hash of its files, '' if it has no changes

    @property
    def label(self) -> str:
        return f"{self.commit[:12]}" + (f"+worktree.{self.dirty[:8]}" if self.dirty else "")


def resolve(repo: Path, asked: str) -> Revision:
    """The commit of ``asked`` in ``repo``; one line naming it if there is none."""
    if asked in WORKTREE_NAMES:
        head = _git(repo, "rev-parse", "HEAD")
        changed = _git(repo, "status", "--porcelain")
        return Revision(WORKTREE, str(head), _tree_hash(repo) if changed else "")
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{asked}^{{commit}}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = ""
    if not commit:
        raise UserError(f"revision {asked!r} names no commit of {str(repo)!r} (worktree names the working tree)")
    return Revision(asked, commit)


def _worktree_files(repo: Path, top: str = "") -> list[str]:
    where = ("--", top, f"{top}.py") if top else ()
    out = _git(repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard", *where, text=False)
    return sorted({f for f in out.decode().split("\0") if f and (repo / f).is_file()})


def _tree_hash(repo: Path) -> str:
    digest = hashlib.sha256()
    for f in _worktree_files(repo):
        digest.update(f.encode() + b"\0" + (repo / f).read_bytes())
    return digest.hexdigest()


def paths_at(repo: Path, rev: Revision, top: str) -> list[str]:
    """The files of package or module ``top`` at the revision (relative to the repo)."""
    if rev.asked == WORKTREE:
        return [f for f in _worktree_files(repo, top) if f == f"{top}.py" or f.startswith(f"{top}/")]
    out = _git(repo, "ls-tree", "-r", "-z", "--name-only", rev.commit, "--", top, f"{top}.py", text=False)
    return sorted(f for f in out.decode().split("\0") if f == f"{top}.py" or f.startswith(f"{top}/"))


def rename(source: str, old: str, new: str) -> str:
    """``source`` with its absolute references to package ``old`` made to ``new``."""
    o = re.escape(old)
    source = re.sub(rf"(?<![\w.]){o}(?=\.[A-Za-z_])", new, source)  # old.x, "old.models.maf:build"
    source = re.sub(rf"(?m)^(\s*from\s+){o}(?=\s+import\b)", rf"\g<1>{new}", source)  # from old import x
    return re.sub(rf"(?m)^(\s*import\s+){o}\s*$", rf"\g<1>{new} as {old}", source)  # import old


def package_name(side: str, rev: Revision, top: str) -> str:
    return f"fb_{side}_{rev.label.replace('+', '_').replace('.', '_')}_{top}"


def materialize(repo: Path, rev: Revision, side: str, top: str) -> tuple[Path, str]:
    """The folder to put on sys.path and the package name under which ``top`` (a
    package folder or a single module) of ``rev`` is imported there. Copied once per
    revision and side into the cache, whole or not at all."""
    name = package_name(side, rev, top)
    root = cache_root() / name
    if (root / ".complete").exists():
        return root, name
    files = paths_at(repo, rev, top)
    if not files:
        what = "the working tree" if rev.asked == WORKTREE else f"revision {rev.asked!r} ({rev.commit[:12]})"
        raise UserError(
            f"{what} of {str(repo)!r} holds no {top}/ package nor {top}.py: "
            + (
                "compare --run needs two revisions of this harness (or --repo with a module:factory flow)"
                if top == HARNESS
                else f"the flow's module {top!r} is not there"
            )
        )
    cache_root().mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".copying-", dir=cache_root()))  # published whole by records.publish
    for f in files:
        data = (repo / f).read_bytes() if rev.asked == WORKTREE else _git(repo, "show", f"{rev.commit}:{f}", text=False)
        target = work / (name + f[len(top) :])
        target.parent.mkdir(parents=True, exist_ok=True)
        if f.endswith(".py"):
            data = rename(data.decode(), top, name).encode()
        target.write_bytes(data)
    (work / ".complete").write_text(rev.commit + "\n")
    publish(work, root)
    return root, name


def check_harness(root: Path, name: str, rev: Revision) -> None:
    """Refuses a harness revision too old for this runner, in one line."""
    for path, needle in NEEDED.items():
        file = root / name / path
        if not file.exists() or needle not in file.read_text():
            raise UserError(
                f"revision {rev.asked!r} ({rev.commit[:12]}) has no harness/{path} with {needle.strip('(')}: it "
                "predates the interface compare --run drives (each side's own build_any and prepare)"
            )
