"""For instructors: slide decks, student copies without solutions, a course map, and a browsable site.

Each notebook describes itself in its metadata, under ``metadata["course"]``::

    {"title": "Why convolutional networks work", "question": "...", "concepts": ["weight sharing", ...],
     "requires": ["01"]}

and tags its exercise prompts ``exercise`` and their folded solutions ``solution``. A checked exercise also has an
``answer`` code cell (the instructor's answer) and a ``check`` code cell (``exercises.check("NN.k")``), both with
``metadata["exercise"] = "NN.k"`` (course/exercises). Everything here is derived
from that: nothing about the course's structure is written twice.

    python -m tools.classroom slides   build/slides/NN_topic.slides.html (reveal.js, via nbconvert)
    python -m tools.classroom students build/students/NN_topic.ipynb (solutions removed, answers stubbed)
    python -m tools.classroom site     build/site/index.html + one page per notebook, with stored outputs and
                                        links between them; opens offline (MathJax etc. in build/site/vendor)
    python -m tools.classroom map      docs/course_map.png (the README's course map)
    python -m tools.classroom tag      (re)write slide metadata into the notebooks themselves
"""
from __future__ import annotations

import argparse
import copy
import html
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
BUILD = ROOT / "build"


@dataclass(frozen=True)
class NotebookInfo:
    number: str  # "01"
    path: Path
    title: str
    question: str
    concepts: tuple[str, ...]
    requires: tuple[str, ...]


class MetadataError(ValueError):
    """A notebook's ``metadata["course"]`` is missing or incomplete; the message names the notebook and key."""


def notebook_paths(directory: Path = NOTEBOOKS) -> list[Path]:
    return sorted(p for p in directory.glob("[0-9][0-9]_*.ipynb"))


def info(path: Path, nb: nbformat.NotebookNode | None = None) -> NotebookInfo:
    nb = nb or nbformat.read(path, as_version=4)
    meta = nb.metadata.get("course")
    if not meta:
        raise MetadataError(f"{path.name} has no metadata['course']; add title, question, concepts, requires")
    missing = [k for k in ("title", "question", "concepts", "requires") if k not in meta]
    if missing:
        raise MetadataError(f"{path.name}: metadata['course'] lacks {', '.join(missing)}")
    return NotebookInfo(path.name[:2], path, meta["title"], meta["question"], tuple(meta["concepts"]),
                        tuple(meta["requires"]))


def infos(directory: Path = NOTEBOOKS) -> list[NotebookInfo]:
    out = [info(p) for p in notebook_paths(directory)]
    known = {i.number for i in out}
    for i in out:
        for r in i.requires:
            if r not in known:
                raise MetadataError(f"{i.path.name} requires notebook {r!r}, which does not exist")
            if r >= i.number:
                raise MetadataError(f"{i.path.name} requires {r}, which comes later: the path must go forward")
    return out


# ----------------------------------------------------------------------------------------------------------
# Slides
def slide_type(cell: nbformat.NotebookNode, first: bool) -> str:
    """Title and ``##`` sections start a slide, ``###`` a sub-slide; an exercise starts a slide; the rest
    continues the current slide ("-")."""
    tags = cell.metadata.get("tags", [])
    if first:
        return "slide"
    if cell.cell_type == "markdown":
        if "exercise" in tags or re.match(r"^#{1,2} ", cell.source):
            return "slide"
        if cell.source.startswith("### "):
            return "subslide"
    return "-"


def tag_slides(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Write ``metadata.slideshow.slide_type`` on every cell (idempotent)."""
    for k, cell in enumerate(nb.cells):
        cell.metadata["slideshow"] = {"slide_type": slide_type(cell, k == 0)}
    return nb


# ----------------------------------------------------------------------------------------------------------
# Student copies
def answer_stub(exercise_id: str) -> str:
    """What a student copy has in place of an answer cell: each variable the check reads, set to None."""
    from course import exercises

    ex = exercises.get(exercise_id)
    return "\n".join([f"# Exercise {ex.id}: replace each None with your answer, then run the check below",
                      *(f"{name} = None" for name in ex.answers)])


def student_copy(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook without its ``solution`` cells, its ``answer`` cells (the instructor's answers, which the checks
    below them pass) replaced by stubs; exercise prompts and ``check`` cells kept, their outputs cleared."""
    out = copy.deepcopy(nb)
    out.cells = [c for c in out.cells if "solution" not in c.metadata.get("tags", [])]
    for c in out.cells:
        tags = c.metadata.get("tags", [])
        if "answer" in tags:
            c.source = answer_stub(c.metadata["exercise"])
        if c.cell_type == "code" and {"exercise", "answer", "check"} & set(tags):
            c.outputs, c.execution_count = [], None
    return out


def solution_texts(nb: nbformat.NotebookNode) -> list[str]:
    return [c.source for c in nb.cells if "solution" in c.metadata.get("tags", [])]


# ----------------------------------------------------------------------------------------------------------
# Course map
def course_map(items: list[NotebookInfo]):
    """The notebooks as boxes (title + concepts), arrows from each notebook to those that build on it."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    depth: dict[str, int] = {}
    for i in items:  # requires always point backwards, so one pass in order suffices
        depth[i.number] = 1 + max((depth[r] for r in i.requires), default=-1)
    cols: dict[int, list[NotebookInfo]] = {}
    for i in items:
        cols.setdefault(depth[i.number], []).append(i)
    w, h = 3.3, 1.9
    pos = {i.number: (d * (w + 0.9), -k * (h + 0.5)) for d, col in cols.items() for k, i in enumerate(col)}
    rows = max(len(c) for c in cols.values())
    fig, ax = plt.subplots(figsize=(1.25 * len(cols) * (w + 0.9), 1.1 * rows * (h + 0.5)))
    for i in items:
        x, y = pos[i.number]
        ax.add_patch(FancyBboxPatch((x, y - h), w, h, boxstyle="round,pad=0.05", fc="#eef3fb", ec="#3b6ea8"))
        ax.text(x + 0.12, y - 0.18, f"{i.number} {i.title}", fontsize=9, fontweight="bold", va="top", wrap=True)
        ax.text(x + 0.12, y - 0.62, "\n".join(f"• {c}" for c in i.concepts[:5]), fontsize=9, va="top")
        for r in i.requires:
            rx, ry = pos[r]
            if ry == y and x - rx > w + 1.0:  # same row, columns skipped: arc over the boxes between
                ends, bend = ((rx + w / 2, ry + 0.08), (x + w / 2, y + 0.08)), "arc3,rad=-0.12"
            else:
                ends, bend = ((rx + w, ry - h / 2), (x, y - h / 2)), "arc3,rad=0.08"
            ax.add_patch(FancyArrowPatch(*ends, arrowstyle="-|>", mutation_scale=12, color="#555",
                                         connectionstyle=bend))
    ax.set_xlim(-0.3, max(p[0] for p in pos.values()) + w + 0.3)
    ax.set_ylim(min(p[1] for p in pos.values()) - h - 0.3, 0.12 * (max(p[0] for p in pos.values()) + w) + 0.5)
    ax.axis("off")
    ax.set_title("Course map: notebooks, the concepts each introduces, and what each builds on", fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------------------
# Site
STATIC = Path(__file__).resolve().parent / "static"
VENDOR = STATIC / "vendor"  # third-party files, copied beside the pages (see vendor/README.md)
TEMPLATES = STATIC / "templates"  # nbconvert's lab and reveal templates, changed to load nothing from the internet
# the template directories in it (course_lab, course_reveal), and it itself for their shared offline_mathjax.html.j2
_OUR_TEMPLATES = {"extra_template_basedirs": [str(TEMPLATES)], "extra_template_paths": [str(TEMPLATES)]}


def _copy_vendor(out: Path, names: tuple[str, ...] | None = None) -> None:
    """``tools/static/vendor`` (or only ``names`` in it) to ``out/vendor``, where the pages find it."""
    import shutil

    if names is None:
        shutil.copytree(VENDOR, out / "vendor", dirs_exist_ok=True)
        return
    (out / "vendor").mkdir(parents=True, exist_ok=True)
    for name in names:
        src = VENDOR / name
        if src.is_dir():
            shutil.copytree(src, out / "vendor" / name, dirs_exist_ok=True)
        else:
            shutil.copy2(src, out / "vendor" / name)


def site_nav(items: list[NotebookInfo], k: int) -> dict:
    """The links of notebook ``k``'s navigation bar: the index, the previous and the next notebook."""
    def link(i: NotebookInfo) -> dict:
        return {"href": i.path.with_suffix(".html").name, "title": f"{i.number} {i.title}"}
    return {"index": "index.html", "prev": link(items[k - 1]) if k > 0 else None,
            "next": link(items[k + 1]) if k + 1 < len(items) else None}


def build_site(out: Path, items: list[NotebookInfo]) -> list[Path]:
    """index.html (course map + one card per notebook) and one HTML page per notebook with its stored outputs,
    each with links to the index and to the previous and next notebooks. Opens offline: the pages load MathJax 3
    and require.js from ``vendor/`` beside them (template ``tools/static/templates/course_lab``), nothing from
    the internet."""
    from nbconvert import HTMLExporter

    out.mkdir(parents=True, exist_ok=True)
    _copy_vendor(out, ("mathjax", "require.js"))
    exporter = HTMLExporter(template_name="course_lab", **_OUR_TEMPLATES)
    pages = []
    for k, i in enumerate(items):
        resources = {"metadata": {"name": f"{i.number} {i.title}"}, "course_nav": site_nav(items, k),
                     "course_vendor": "vendor"}
        body, _ = exporter.from_notebook_node(nbformat.read(i.path, as_version=4), resources=resources)
        page = out / i.path.with_suffix(".html").name
        page.write_text(body, encoding="utf-8")
        pages.append(page)
    fig = course_map(items)
    fig.savefig(out / "course_map.png", dpi=110)
    cards = "\n".join(
        f'<li><a href="{p.name}"><b>{i.number} {html.escape(i.title)}</b></a><br><i>{html.escape(i.question)}</i>'
        f'<br>concepts: {html.escape(", ".join(i.concepts))}</li>' for i, p in zip(items, pages))
    index = (f"<!doctype html><html><head><meta charset='utf-8'><title>Why CNNs look the way they do</title>"
             f"<style>body{{font-family:sans-serif;max-width:960px;margin:auto}} li{{margin:1em 0}}</style></head>"
             f"<body><h1>Why modern CNN architectures look the way they do</h1>"
             f"<img src='course_map.png' alt='course map' style='max-width:100%'><ol>{cards}</ol></body></html>")
    (out / "index.html").write_text(index, encoding="utf-8")
    return [out / "index.html", *pages]


def build_slides(out: Path, items: list[NotebookInfo]) -> list[Path]:
    """reveal.js decks with the stored outputs (what ``jupyter nbconvert --to slides`` makes), which open offline:
    reveal.js, require.js, jQuery and MathJax 3 are copied beside them from ``tools/static/vendor`` instead of a
    CDN (template ``tools/static/templates/course_reveal``)."""
    from nbconvert import SlidesExporter

    out.mkdir(parents=True, exist_ok=True)
    _copy_vendor(out)
    exporter = SlidesExporter(template_name="course_reveal", **_OUR_TEMPLATES,
                              reveal_url_prefix="vendor/reveal.js", require_js_url="vendor/require.js",
                              jquery_url="vendor/jquery.min.js", reveal_theme="white", reveal_scroll=True,
                              reveal_width="1400", reveal_height="900")  # wide enough for 120-column code
    paths = []
    for i in items:
        resources = {"metadata": {"name": f"{i.number} {i.title}"}, "course_vendor": "vendor"}
        body, _ = exporter.from_notebook_node(tag_slides(nbformat.read(i.path, as_version=4)), resources=resources)
        p = out / i.path.with_suffix(".slides.html").name
        p.write_text(body, encoding="utf-8")
        paths.append(p)
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.classroom", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=("slides", "students", "site", "map", "tag"))
    p.add_argument("--out", type=Path, help="output directory (default: build/<command>, or docs/ for map)")
    args = p.parse_args(argv)
    try:
        items = infos()
    except MetadataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.command == "tag":
        for i in items:
            nbformat.write(tag_slides(nbformat.read(i.path, as_version=4)), i.path)
        print(f"slide metadata written into {len(items)} notebooks")
    elif args.command == "slides":
        for path in build_slides(args.out or BUILD / "slides", items):
            print(path)
    elif args.command == "students":
        out = args.out or BUILD / "students"
        out.mkdir(parents=True, exist_ok=True)
        for i in items:
            nbformat.write(student_copy(nbformat.read(i.path, as_version=4)), out / i.path.name)
            print(out / i.path.name)
    elif args.command == "site":
        print(build_site(args.out or BUILD / "site", items)[0])
    elif args.command == "map":
        out = args.out or ROOT / "docs"
        out.mkdir(parents=True, exist_ok=True)
        course_map(items).savefig(out / "course_map.png", dpi=110)
        print(out / "course_map.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
