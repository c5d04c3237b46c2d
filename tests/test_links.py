"""Every relative link a student can follow resolves to a file of the repository: in the README, in every
notebook's markdown, and in the docs."""
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
# [text](target), href="target", and a bare relative path in parentheses such as (../notes/guide.md)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)|\bhref=\"([^\"]+)\"|(?<!\])\((\.\.?/[^)\s]+)\)")


def relative_links(text: str):
    for m in LINK.finditer(text):
        target = (m.group(1) or m.group(2) or m.group(3)).split("#", 1)[0]
        if target and not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:, data: ... are not files
            yield target


def documents():
    yield ROOT / "README.md", (ROOT / "README.md").read_text()
    for md in sorted((ROOT / "docs").glob("**/*.md")) if (ROOT / "docs").exists() else []:
        yield md, md.read_text()
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = nbformat.read(nb, as_version=4).cells
        yield nb, "\n".join(c.source for c in cells if c.cell_type == "markdown")


@pytest.mark.parametrize("path,text", list(documents()), ids=lambda v: v.name if isinstance(v, Path) else "")
def test_relative_links_resolve_inside_the_repository(path, text):
    for target in relative_links(text):
        resolved = (path.parent / target).resolve()
        assert resolved.is_relative_to(ROOT), f"{path.name}: link {target!r} leaves the repository"
        assert resolved.exists(), f"{path.name}: link {target!r} does not resolve to a file"


def test_the_check_sees_a_dead_link():
    text = "see [the guide](../shared/GUIDE.md), [x](https://e.org/a) and the notes (../notes.md)"
    assert list(relative_links(text)) == ["../shared/GUIDE.md", "../notes.md"]
