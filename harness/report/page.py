"""REPORT.html: the report as one self-contained page, built from REPORT.md's text:
every figure inline (its SVG, or the PNG as a data URI where there is no SVG), no
script and no link that needs the network, so it opens offline from a folder or a mail."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1400px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; }
th { background: #f3f3f3; }
svg, img { max-width: 100%; height: auto; }
code { background: #f3f3f3; padding: 0 0.2em; }
"""

_IMAGE = re.compile(r'<img alt="([^"]*)" src="([^"]*)"\s*/?>')
_NAME = re.compile(r"[A-Za-z0-9_.-]+")  # a figure's file name as plots.file_stem makes it: in the folder


def _figure(folder: Path, alt: str, name: str) -> str:
    """A figure of the folder inline: its SVG where one was drawn beside the PNG."""
    if not _NAME.fullmatch(name) or name.startswith("."):
        return f"<p>[figure {html.escape(name)}: not a figure of this folder]</p>"
    svg, png = folder / (Path(name).stem + ".svg"), folder / name
    if svg.is_file() and not svg.is_symlink():
        text = svg.read_text(encoding="utf-8")
        start = text.find("<svg")
        return f'<figure aria-label="{html.escape(alt)}">{text[start:]}</figure>' if start >= 0 else ""
    if png.is_file() and not png.is_symlink():
        data = base64.b64encode(png.read_bytes()).decode()
        return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'
    return f"<p>[figure {html.escape(name)}: missing]</p>"


def page(text: str, folder: Path) -> str:
    """The HTML page of a report's markdown ``text`` whose figures lie in ``folder``."""
    import markdown

    body = markdown.markdown(text, extensions=["tables"])
    body = _IMAGE.sub(lambda m: _figure(folder, html.unescape(m.group(1)), html.unescape(m.group(2))), body)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>flowbench report</title>\n'
        f"<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )
