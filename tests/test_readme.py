"""The README's generated blocks and byte-identical reports."""

import shutil
from pathlib import Path

import pytest

from harness import readme
from harness.__main__ import main
from harness.report import build_report

from .test_report import synthetic

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_blocks_match_the_committed_reports():
    """CI fails here when a report was regenerated without `python -m harness readme`."""
    assert readme.main(ROOT / "README.md", ROOT / "reports", check=True) == []


def test_a_stale_block_is_named_and_rewritten(tmp_path, capsys):
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    copy, guide = tmp_path / "README.md", tmp_path / "docs" / "user-guide.md"
    text, guide_text = (ROOT / "README.md").read_text(), guide.read_text()
    copy.write_text(text.replace("<!-- quick:start -->\n", "<!-- quick:start -->\nold output\n", 1))
    guide.write_text(guide_text.replace("<!-- versus:start -->\n", "<!-- versus:start -->\nold numbers\n", 1))
    args = ["readme", "--readme", str(copy), "--reports", str(ROOT / "reports")]
    assert main([*args, "--check"]) == 1
    assert "stale generated blocks: README.md: quick, docs/user-guide.md: versus" in capsys.readouterr().err
    assert main(args) == 0 and copy.read_text() == text and guide.read_text() == guide_text


def test_every_block_is_held_by_a_document(tmp_path):
    (tmp_path / "README.md").write_text("# nothing generated\n")
    with pytest.raises(ValueError, match="no document holds the block"):
        readme.main(tmp_path / "README.md", ROOT / "reports", check=True)


@pytest.mark.slow
def test_a_report_built_twice_is_byte_identical(tmp_path):
    src = synthetic(tmp_path / "sweep")
    first, second = tmp_path / "a", tmp_path / "b"
    build_report([src], first, paper=False)
    build_report([src], second, paper=False)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir()) and any(n.endswith(".svg") for n in names)
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    shutil.rmtree(second)
