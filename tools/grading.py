"""Grade submissions: execute each notebook and collect what its exercise checks reported.

    python -m tools.grading [--out build/grades.json] [--timeout 600] NOTEBOOK...

Each NOTEBOOK is a submission (a student copy the student filled in, or an instructor copy), named as the course
names it (``02_bottleneck_1x1.ipynb``: its first two digits say which exercises to expect). It is executed with
nbclient in its own directory, errors allowed, so a cell that raises does not stop the rest; then every exercise of
that notebook (``course.exercises.exercises_of``) gets ``{"passed": ..., "hint": ...}``:

- what its check cell reported (``course.exercises.check`` leaves the result in the output's metadata);
- failed, if its answer cell raised (with the error), or if no check reported (a deleted check cell, a check cell
  that raised, a notebook that stopped or ran out of time).

The grades are written as ``{"<notebook file name>": {"<exercise id>": {"passed": bool, "hint": str}}}`` (two
submissions with the same file name are keyed by their paths as given). The run fails only on bad input: a path that
does not exist or is not a course notebook.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import nbformat

from course import exercises

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "build" / "grades.json"


class SubmissionError(ValueError):
    """A submission that cannot be graded at all (missing, unreadable, or not named after a course notebook)."""


def notebook_number(path: Path) -> str:
    m = re.match(r"(\d\d)_", path.name)
    if not m:
        raise SubmissionError(f"{path}: cannot tell which notebook this is; submissions keep the course's file "
                              f"names, e.g. 02_bottleneck_1x1.ipynb")
    return m.group(1)


def read_submission(path: Path) -> nbformat.NotebookNode:
    if not path.is_file():
        raise SubmissionError(f"{path}: no such notebook")
    try:
        return nbformat.read(path, as_version=4)
    except Exception as e:  # not JSON, not a notebook
        raise SubmissionError(f"{path}: not a readable notebook ({type(e).__name__}: {e})") from e


def clear_outputs(nb: nbformat.NotebookNode) -> None:
    """A submission's stored outputs are not evidence (a pass can be typed in): only what runs here counts."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None


def execute(nb: nbformat.NotebookNode, cwd: Path, timeout: int) -> str | None:
    """Run every cell in place (errors allowed); the reason the run stopped early, or None if it ran to the end."""
    from nbclient import NotebookClient

    clear_outputs(nb)
    client = NotebookClient(nb, timeout=timeout, allow_errors=True, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}})
    try:
        client.execute()
    except Exception as e:  # a cell past the timeout, a kernel that died: grade what ran
        return f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
    return None


def _error(cell) -> str | None:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return f"{out.get('ename')}: {out.get('evalue')}"
    return None


def collect(nb: nbformat.NotebookNode, expected: list[str], stopped: str | None = None) -> dict[str, dict]:
    """The grade of each expected exercise, from an executed notebook's outputs."""
    reported, answer_errors, check_errors = {}, {}, {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            rec = out.get("metadata", {}).get(exercises.METADATA_KEY)
            if rec and rec.get("id") in expected:
                reported[rec["id"]] = {"passed": bool(rec["passed"]), "hint": str(rec.get("hint", ""))}
        ex_id, err = cell.metadata.get("exercise"), _error(cell)
        if ex_id and err:
            (answer_errors if "answer" in cell.metadata.get("tags", []) else check_errors)[ex_id] = err
    grades = {}
    for ex_id in expected:
        if ex_id in answer_errors:
            grades[ex_id] = {"passed": False, "hint": f"your answer cell raised {answer_errors[ex_id]}"}
        elif ex_id in reported:
            grades[ex_id] = reported[ex_id]
        elif ex_id in check_errors:
            grades[ex_id] = {"passed": False, "hint": f"the check cell raised {check_errors[ex_id]}"}
        else:
            why = f"the notebook stopped ({stopped})" if stopped else "its check cell is missing"
            grades[ex_id] = {"passed": False, "hint": f"the check of exercise {ex_id} did not run: {why}"}
    return grades


def grade(path: Path, timeout: int = 600) -> dict[str, dict]:
    number = notebook_number(path)
    nb = read_submission(path)
    expected = [e.id for e in exercises.exercises_of(number)]
    stopped = execute(nb, path.resolve().parent, timeout)
    return collect(nb, expected, stopped)


def grade_all(paths: list[Path], timeout: int = 600) -> dict[str, dict]:
    for p in paths:  # bad input fails before anything runs
        notebook_number(p)
        read_submission(p)
    names = [p.name for p in paths]
    keys = [p.name if names.count(p.name) == 1 else str(p) for p in paths]
    return {k: grade(p, timeout) for k, p in zip(keys, paths)}


def summary(grades: dict[str, dict]) -> str:
    lines = []
    for name, g in grades.items():
        passed = sum(r["passed"] for r in g.values())
        lines.append(f"{name}: {passed}/{len(g)} exercises passed")
        lines += [f"  {ex_id}: {'passed' if r['passed'] else 'failed: ' + r['hint']}" for ex_id, r in g.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.grading", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("notebooks", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--timeout", type=int, default=600, help="seconds a cell may run (default 600)")
    args = p.parse_args(argv)
    try:
        grades = grade_all(args.notebooks, args.timeout)
    except SubmissionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(grades, indent=2) + "\n", encoding="utf-8")
    print(summary(grades))
    print(f"grades written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
