"""Every notebook's "Runs in" figure, from one measurement: ``make notebooks`` times each notebook (wall seconds,
kernel start included, a new empty cache directory for each so that the figure is a first run's) and records
it here; ``write`` then puts the same number into the notebook's header paragraph and into the README's table,
so the two cannot drift apart (tests/test_runtimes.py checks that they agree).

    python -m tools.runtimes record NOTEBOOK SECONDS   # after each notebook: build/notebook_times.json
    python -m tools.runtimes write [NOTEBOOK ...]      # headers and README from the recorded times
"""
from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import platform
import re
import sys

import nbformat

ROOT = pathlib.Path(__file__).resolve().parents[1]
TIMES = ROOT / "build" / "notebook_times.json"
README = ROOT / "README.md"
HEADER = re.compile(r"^\*\*Runs in:\*\*.*?(?=\n\n|\Z)", re.S | re.M)  # the whole paragraph
README_ROW = re.compile(r"^(\| \[\d\d [^|]*\]\(notebooks/(?P<file>[^)]+\.ipynb)\) \|.*\| )(?P<t>\d+) s \|$",
                        re.M)


def header(seconds: float) -> str:
    """The header paragraph of a notebook that ran in ``seconds``."""
    return (f"**Runs in:** about {round(seconds)} s on a 2-core laptop CPU at `SCALE = \"small\"`: the wall time of "
            "`make notebooks` on the course's reference machine, kernel start included, on a first run (empty "
            "caches); later runs are faster.")


def record(notebook: pathlib.Path, seconds: float, times: pathlib.Path = TIMES) -> None:
    """Add ``notebook``'s time to the ``times`` file (created if missing), with the machine and the date."""
    if seconds <= 0:
        raise ValueError(f"a notebook cannot run in {seconds} s")
    data = json.loads(times.read_text()) if times.exists() else {}
    data[notebook.name] = {"seconds": round(seconds, 1), "date": datetime.date.today().isoformat(),
                           "machine": f"{platform.node()} ({platform.processor() or platform.machine()})"}
    times.parent.mkdir(parents=True, exist_ok=True)
    times.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def header_seconds(notebook: pathlib.Path) -> int | None:
    """The figure a notebook's header states, or None if it has no "Runs in" paragraph."""
    for cell in nbformat.read(notebook, as_version=4).cells:
        if cell.cell_type == "markdown" and (m := re.search(r"\*\*Runs in:\*\* about (\d+) s", cell.source)):
            return int(m.group(1))
    return None


def readme_seconds(readme: pathlib.Path = README) -> dict[str, int]:
    """{notebook file name: seconds} from the README's table of notebooks."""
    return {m["file"]: int(m["t"]) for m in README_ROW.finditer(readme.read_text())}


def write(notebooks: list[pathlib.Path], times: pathlib.Path = TIMES, readme: pathlib.Path = README) -> None:
    """Write each notebook's recorded time into its header paragraph and into the README's table."""
    if not times.exists():
        raise SystemExit(f"{times} does not exist: run `make notebooks` first (it records each notebook's time)")
    data = json.loads(times.read_text())
    in_readme = readme_seconds(readme)
    for nb_path in notebooks:
        if nb_path.name not in data:
            raise SystemExit(f"no time recorded for {nb_path.name} in {times}: run `make notebooks "
                             f"NOTEBOOKS={nb_path}` first")
        if nb_path.name not in in_readme:
            raise SystemExit(f"{readme} has no table row for {nb_path.name} ending in '| N s |'")
        nb = nbformat.read(nb_path, as_version=4)
        cell = next((c for c in nb.cells if c.cell_type == "markdown" and HEADER.search(c.source)), None)
        if cell is None:
            raise SystemExit(f"{nb_path} has no paragraph starting with **Runs in:** to write the time into")
        cell.source = HEADER.sub(lambda _: header(data[nb_path.name]["seconds"]), cell.source, count=1)
        nbformat.write(nb, nb_path)
    names = {p.name for p in notebooks}
    readme.write_text(README_ROW.sub(lambda m: f"{m[1]}{round(data[m['file']]['seconds'])} s |"
                                     if m["file"] in names else m[0], readme.read_text()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.runtimes", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="record one notebook's wall time")
    rec.add_argument("notebook", type=pathlib.Path)
    rec.add_argument("seconds", type=float)
    wr = sub.add_parser("write", help="write the recorded times into the headers and the README")
    wr.add_argument("notebooks", type=pathlib.Path, nargs="*")
    args = parser.parse_args(argv)
    if args.command == "record":
        record(args.notebook, args.seconds)
    else:
        write(args.notebooks or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")))


if __name__ == "__main__":
    main(sys.argv[1:])
