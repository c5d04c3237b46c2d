"""Classroom material: every notebook's structure and metadata, student copies, slides metadata, course map."""
import re

import matplotlib
import nbformat
import numpy as np
import pytest

from tools import classroom

matplotlib.use("Agg")
PATHS = classroom.notebook_paths()


def load(path):
    return nbformat.read(path, as_version=4)


def test_there_are_notebooks_and_their_metadata_forms_a_forward_path():
    items = classroom.infos()
    assert [i.number for i in items] == [p.name[:2] for p in PATHS] and items[0].number == "01"
    for i in items[1:]:
        assert i.requires, f"{i.path.name} should say which earlier notebook it builds on"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_notebook_opens_with_goals_and_closes_with_summary_and_exercises(path):
    nb = load(path)
    first = nb.cells[0].source
    assert first.startswith("# ") and "question" in first.lower() and "assumes" in first.lower()
    assert re.search(r"(runs in|run time)", first, re.I) and re.search(r"(learn|goals)", first, re.I)
    assert "parameters" in nb.cells[1].metadata.get("tags", []) and 'SCALE = "small"' in nb.cells[1].source
    assert re.search(r"^SEED = 0\b", nb.cells[1].source, re.M), \
        "every parameters cell has SEED = 0 (papermill -p SEED N)"
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    ex = [k for k, t in enumerate(tags) if "exercise" in t]
    assert ex, "no exercise"
    for k in ex:
        assert "solution" in tags[k + 1] and "<details>" in nb.cells[k + 1].source, f"cell {k + 1}"
    summary = [k for k, c in enumerate(nb.cells) if c.cell_type == "markdown" and "## Summary" in c.source]
    assert summary and summary[0] < ex[0], "a summary comes before the exercises"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_every_cell_carries_slide_metadata(path):
    nb = load(path)
    assert all("slide_type" in c.metadata.get("slideshow", {}) for c in nb.cells), \
        "run `python -m tools.classroom tag`"
    assert nb.cells[0].metadata.slideshow.slide_type == "slide"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_student_copy_has_no_solution_text_but_keeps_prompts(path):
    nb = load(path)
    student = classroom.student_copy(nb)
    text = "\n".join(c.source for c in student.cells)
    rest = "\n".join(c.source for c in nb.cells if "solution" not in c.metadata.get("tags", []))
    for sol in classroom.solution_texts(nb):
        body = sol.replace("<details><summary>Solution</summary>", "").replace("</details>", "")
        for line in (ln.strip() for ln in body.splitlines()):
            if len(line) > 25 and line not in rest:  # a solution's own substantial lines must all be gone
                assert line not in text, line
    prompts = [c.source for c in nb.cells if "exercise" in c.metadata.get("tags", [])]
    assert prompts and all(p in [c.source for c in student.cells] for p in prompts)
    assert "Solution" not in "".join(c.source for c in student.cells if c.cell_type == "markdown")


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_student_copy_runs_wherever_the_instructor_copy_does(path):
    """A student copy drops markdown solution cells and stubs answer cells: its other code cells are the instructor
    copy's, in order, so nbval's run of the instructor copy (make test) runs them too, without executing the notebook
    a third time (a stub only sets names to None, which the checks below it report as unanswered)."""
    nb = load(path)
    student = classroom.student_copy(nb)
    assert all(c.cell_type == "markdown" for c in nb.cells if "solution" in c.metadata.get("tags", [])), \
        "a solution must be a markdown cell, or the student copy would run other code than nbval checks"
    code = [c.source for c in nb.cells if c.cell_type == "code" and "answer" not in c.metadata.get("tags", [])]
    assert [c.source for c in student.cells if c.cell_type == "code" and "answer" not in c.metadata.get("tags", [])] \
        == code, "only answer cells differ (they become stubs that set each answer to None)"
    first = next(k for k, c in enumerate(student.cells) if "exercise" in c.metadata.get("tags", []))
    assert any(c.cell_type == "code" for c in student.cells[:first]), "the copy runs something before the exercises"


def test_course_map_is_generated_from_metadata_and_up_to_date(tmp_path):
    assert classroom.main(["map", "--out", str(tmp_path)]) == 0
    fresh = matplotlib.image.imread(tmp_path / "course_map.png")
    committed = matplotlib.image.imread(classroom.ROOT / "docs" / "course_map.png")
    assert fresh.shape == committed.shape and np.abs(fresh - committed).max() < 1e-6, "run `make map`"
    assert "docs/course_map.png" in (classroom.ROOT / "README.md").read_text()


def test_missing_metadata_is_a_clear_error(tmp_path):
    nb = nbformat.v4.new_notebook()
    nbformat.write(nb, tmp_path / "09_x.ipynb")
    with pytest.raises(classroom.MetadataError, match="09_x.ipynb has no metadata"):
        classroom.infos(tmp_path)
