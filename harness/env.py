"""Provenance: what ran, where and when. Every track's settings file starts from
:func:`environment`; counts are cached under :func:`code_version`, a hash of the code
that ran, so an uncommitted change is counted anew."""

from __future__ import annotations

import ast
import datetime as dt
import functools
import hashlib
import importlib.util
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

from . import __version__
from .table import Col

PACKAGE = Path(__file__).parent
# The code a measurement runs: the measuring, and the module that builds the model with
# everything of this package it imports (so a new family does not change the version of
# the others'). Modules of names only (the vocabulary) are not followed.
MEASURED = ("measure",)
VOCABULARY = ("ops.py", "table.py", "errors.py")
PEER_LIBRARIES = ("zuko", "pyro", "nflows", "normflows")


def _git(*args: str, path: Path | None = None) -> str | None:
    """git's output in ``path`` (this package's folder by default), None outside git."""
    try:
        out = subprocess.run(["git", *args], cwd=path or PACKAGE, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


@functools.cache
def git_commit(path: Path | None = None) -> str:
    return _git("rev-parse", "--short=12", "HEAD", path=path) or "unknown"


def resolve_revision(revision: str, path: Path | None = None) -> str:
    """The commit a git revision (HEAD~1, a branch, a tag) names; UserError if none."""
    from .errors import UserError

    commit = _git("rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}", path=path)
    if not commit:
        raise UserError(f"{revision!r} names no commit of this repository")
    return commit


def dirty_tree(path: Path | None = None) -> bool | None:
    """Whether the working tree has uncommitted changes (None outside git)."""
    out = _git("status", "--porcelain", "--untracked-files=no", path=path)
    return None if out is None else bool(out)


def _cpuinfo(field: str) -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_flags() -> str:
    """The CPU's feature flags (/proc/cpuinfo), e.g. for the vector units a GEMM uses."""
    return _cpuinfo("flags")


def cpu_name() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def overloaded(loads: list, cores: int | None = None) -> str:
    """A sentence when a 1-minute load average (of ``loads``, each [1, 5, 15]-minute
    averages or None) exceeded the cores: timings then shared the machine. '' if not."""
    cores = cores or os.cpu_count() or 1
    seen = [x[0] for x in loads if x]
    if not seen or max(seen) <= cores:
        return ""
    return f"load {max(seen):.2f} on {cores} cores: timings shared the machine"


def gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def gpu_driver() -> str | None:
    if gpu_name() is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def machine_name(device: str) -> str:
    """The hardware a row is measured on, as reports name machines: the GPU's name for
    ``cuda``, the CPU model and its core count for ``cpu``."""
    if device == "cuda" and gpu_name():
        return str(gpu_name())
    return f"{cpu_name()} ({os.cpu_count()} cores)"


def command_line() -> str:
    """How this process was started, as a user would type it."""
    program = Path(sys.argv[0]).name if sys.argv else ""
    if program in ("__main__.py", "flowbench"):
        return "python -m harness " + shlex.join(sys.argv[1:])
    return shlex.join(sys.argv)


def environment() -> dict:
    """The environment every settings file starts with."""
    import torch

    return {
        "harness_version": __version__,
        "command": command_line(),
        Col.COMMIT: git_commit(),
        "dirty": dirty_tree(),
        "code_version": code_version(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "cpu_flags": cpu_flags(),
        "load_start": load_average(),
        "gpu": gpu_name(),
        "gpu_driver": gpu_driver(),
        "cuda": torch.version.cuda if gpu_name() else None,
    }


def _hash_files(files: list[Path], digest: hashlib._Hash, root: Path) -> None:
    """Each file's path below ``root`` and its bytes: the same code hashes the same
    wherever it is checked out (a cache of counts travels with a clone)."""
    for file in sorted(files):
        digest.update(file.relative_to(root).as_posix().encode())
        digest.update(file.read_bytes())


def user_code(origin: Path, module: str) -> list[Path]:
    """The files a user's flow module may run: every .py file of its top-level package
    (a module of a package), or of the folder it sits in (a module on its own), so a
    change to a helper it imports is a change of the code that ran."""
    depth = module.count(".") + (origin.name == "__init__.py")
    top = origin.parents[depth - 1] if depth else origin.parent
    files = top.rglob("*.py") if depth else top.glob("*.py")
    return sorted(p for p in files if p.is_file() and "__pycache__" not in p.parts)[:2000]


def imported_files(start: list[Path]) -> list[Path]:
    """``start`` and every module of this package they import, directly or through each
    other (at the top or inside a function), read from their syntax trees; the
    :data:`VOCABULARY` modules are not followed."""
    seen: set[Path] = set()
    todo = [p.resolve() for p in start]
    while todo:
        path = todo.pop()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        package = path.relative_to(PACKAGE).parts[:-1]  # the package the file is in (or is the __init__ of)
        for node in ast.walk(ast.parse(path.read_bytes())):
            names: list[tuple[str, ...]] = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                elif (node.module or "").split(".")[0] == PACKAGE.name:
                    base = ()
                else:
                    continue
                module = tuple(node.module.split(".")) if node.module else ()
                if not node.level:
                    module = module[1:]
                names = [(*base, *module, alias.name) for alias in node.names] + [(*base, *module)]
            elif isinstance(node, ast.Import):
                names = [tuple(a.name.split(".")[1:]) for a in node.names if a.name.split(".")[0] == PACKAGE.name]
            for parts in names:
                for candidate in (PACKAGE.joinpath(*parts).with_suffix(".py"), PACKAGE.joinpath(*parts, "__init__.py")):
                    if candidate.is_file() and candidate.name not in VOCABULARY:
                        todo.append(candidate)
    return sorted(seen)


@functools.cache
def code_version(spec: str = "") -> str:
    """A hash of the code a measurement of model ``spec`` runs: the measuring code
    (:data:`MEASURED`), the module that builds it (a reference family's, the peers'
    adapters, or the registry's for a user's flow) with the modules of this package it
    imports, torch's and the peer libraries' versions, and for a user's
    ``module:factory`` its package's source files. Counts cached under it are counted
    anew after any change, committed or not; a change to another family's module is not
    one."""
    from importlib.metadata import PackageNotFoundError, version

    from . import ops

    digest = hashlib.sha256()
    files = []
    for part in MEASURED:
        path = PACKAGE / part
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    family = ops.FAMILIES.get(spec)
    if family is not None:
        files.append(PACKAGE.joinpath(*family.builder.partition(":")[0].split(".")[1:]).with_suffix(".py"))
    else:
        files += [PACKAGE / "peers" / "__init__.py", PACKAGE / "registry.py"]
    _hash_files(imported_files(files), digest, PACKAGE)
    for library in ("torch", "zuko", "pyro-ppl", "nflows", "normflows"):
        try:
            digest.update(f"{library} {version(library)}".encode())
        except PackageNotFoundError:
            pass
    module = spec.partition(":")[0] if ":" in spec else ""
    if module:
        if os.getcwd() not in sys.path:  # where registry imports it from
            sys.path.insert(0, os.getcwd())
        try:
            found = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            found = None
        origin = found.origin if found is not None else None
        if origin and Path(origin).is_file():
            files = user_code(Path(origin).resolve(), module)
            _hash_files(files, digest, Path(os.path.commonpath([f.parent for f in files])))
    return digest.hexdigest()[:16]
