"""The "Runs in" figures: one measurement (``make notebooks`` -> tools/runtimes.py) writes both each notebook's
header and the README's table, so they agree."""
import shutil

import nbformat
import pytest

from tools import classroom, runtimes


def test_every_header_states_the_readme_figure():
    table = runtimes.readme_seconds()
    notebooks = classroom.notebook_paths()
    assert sorted(table) == sorted(p.name for p in notebooks)
    for nb in notebooks:
        assert runtimes.header_seconds(nb) == table[nb.name], (
            f"{nb.name}: header and README disagree; run `make notebooks NOTEBOOKS={nb.relative_to(runtimes.ROOT)}`")


def test_write_puts_one_recorded_time_into_the_header_and_the_readme(tmp_path):
    nb = tmp_path / "02_bottleneck_1x1.ipynb"
    shutil.copy(runtimes.ROOT / "notebooks" / nb.name, nb)
    readme = tmp_path / "README.md"
    readme.write_text("| notebook | q | CPU time |\n| --- | --- | --- |\n"
                      f"| [02 1x1 convolutions](notebooks/{nb.name}) | a | b | 999 s |\n")
    times = tmp_path / "times.json"
    runtimes.record(nb, 42.4, times)
    runtimes.write([nb], times, readme)
    assert runtimes.header_seconds(nb) == 42 and runtimes.readme_seconds(readme) == {nb.name: 42}
    header = next(c.source for c in nbformat.read(nb, as_version=4).cells if "**Runs in:**" in c.source)
    assert runtimes.header(42.4) in header and header.count("**Runs in:**") == 1


def test_bad_measurements_and_missing_records_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="cannot run in"):
        runtimes.record(tmp_path / "x.ipynb", 0, tmp_path / "t.json")
    with pytest.raises(SystemExit, match="make notebooks"):
        runtimes.write([tmp_path / "x.ipynb"], tmp_path / "missing.json", tmp_path / "README.md")
