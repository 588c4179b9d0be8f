"""The README's generated blocks and byte-identical reports."""

import shutil
from pathlib import Path

from harness import readme
from harness.__main__ import main
from harness.report import build_report

from .test_report import synthetic

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_blocks_match_the_committed_reports():
    """CI fails here when a report was regenerated without `python -m harness readme`."""
    assert readme.main(ROOT / "README.md", ROOT / "reports", check=True) == []


def test_a_stale_block_is_named_and_rewritten(tmp_path, capsys):
    copy = tmp_path / "README.md"
    text = (ROOT / "README.md").read_text()
    copy.write_text(text.replace("<!-- versus:start -->\n", "<!-- versus:start -->\nold numbers\n", 1))
    args = ["readme", "--readme", str(copy), "--reports", str(ROOT / "reports")]
    assert main([*args, "--check"]) == 1
    assert "stale README blocks: versus" in capsys.readouterr().err
    assert main(args) == 0 and copy.read_text() == text


def test_a_report_built_twice_is_byte_identical(tmp_path):
    src = synthetic(tmp_path / "sweep", devices=("cpu", "cuda"))
    first, second = tmp_path / "a", tmp_path / "b"
    build_report([src], first, paper=False)
    build_report([src], second, paper=False)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir()) and any(n.endswith(".svg") for n in names)
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    shutil.rmtree(second)
