"""The README and docs/ as a newcomer reads them: short, and every command in them runs
as written (each harness command parses against the CLI, each make target exists)."""

import re
import shlex
from pathlib import Path

import pytest

from harness.cli import parser
from harness.readme import documents

ROOT = Path(__file__).resolve().parents[1]
DOCS = documents(ROOT / "README.md")
HARNESS = (".venv/bin/python -m harness ", "python -m harness ", "flowbench ")


def commands(path: Path) -> list[str]:
    """The shell commands of a document's ```bash blocks, continuation lines joined and
    comments dropped."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", path.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.split(r"\s+#\s", line, maxsplit=1)[0].strip()
            if line and not line.startswith("#"):
                found.append(line)
    return found


ALL = [(p.relative_to(ROOT).as_posix(), c) for p in DOCS for c in commands(p)]


def test_the_readme_is_a_front_door():
    text = (ROOT / "README.md").read_bytes()
    assert len(text) <= 12 * 1024, f"README.md is {len(text)} bytes"
    first = text[: 3 * 1024].decode(errors="ignore")
    assert "## Quick start" in first and "harness sweep --quick" in first
    for doc in ("user-guide", "methodology", "cli", "extending", "architecture", "history"):
        assert (ROOT / "docs" / f"{doc}.md").is_file() and f"docs/{doc}.md" in text.decode()
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_documents_hold_commands():
    assert len(ALL) > 20 and {p for p, _ in ALL} >= {"README.md", "docs/user-guide.md"}


@pytest.mark.parametrize("where,command", ALL, ids=[f"{p}:{c[:60]}" for p, c in ALL])
def test_every_command_runs_as_written(where, command):
    if command.startswith(HARNESS):
        args = shlex.split(command.split("harness ", 1)[1] if "harness " in command else command[len("flowbench ") :])
        try:
            parser().parse_args(args)
        except SystemExit as e:
            pytest.fail(f"{where}: `{command}` does not parse (exit {e.code})")
    elif command.startswith("make "):
        targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M)
        wanted = [w for w in shlex.split(command)[1:] if "=" not in w]
        assert set(wanted) <= set(targets), f"{where}: no make target {set(wanted) - set(targets)}"
    elif command.startswith(".venv/bin/asv "):
        assert shlex.split(command)[1] in {"machine", "run", "publish", "preview", "compare"}
    elif command.startswith(("git clone", "cd ", "pip install")):
        pass
    else:
        pytest.fail(f"{where}: `{command}` is a command this test does not know how to check")
