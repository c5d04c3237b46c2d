"""The tolerance-aware nbval comparison (tests/nbval_tolerance.py): unit tests, then nbval itself on small notebooks."""
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from tests.nbval_tolerance import Tolerance, ToleranceError, differences, reconcile

ROOT = Path(__file__).resolve().parents[1]
ABS = Tolerance(abs=0.02, why="test")


def test_a_decimal_inside_the_tolerance_passes():
    assert differences("test accuracy 0.873\n", "test accuracy 0.861\n", ABS) == []


def test_a_decimal_outside_the_tolerance_fails():
    (why,) = differences("test accuracy 0.873\n", "test accuracy 0.841\n", ABS)
    assert "0.873 stored, 0.841 now" in why


def test_a_changed_word_fails():
    (why,) = differences("CNN 0.873\n", "MLP 0.873\n", ABS)
    assert "text differs" in why


def test_a_changed_integer_fails_even_in_a_tolerant_cell():
    (why,) = differences("1,797 images, 64 params\n", "1,797 images, 65 params\n", Tolerance(abs=100, why="t"))
    assert "integer 64 stored, 65 now" in why
    assert differences("10 epochs\n", "10.0 epochs\n", Tolerance(abs=100, why="t")), "an integer never becomes 10.0"


def test_names_with_digits_are_text_not_numbers():
    assert differences("resnet20 3x3\n", "resnet56 3x3\n", Tolerance(abs=100, why="t"))


def test_mean_and_spread_compare_within_the_printed_spreads():
    tol = Tolerance(spread=2, why="t")
    assert differences("acc 0.870 ± 0.010\n", "acc 0.905 ± 0.008\n", tol) == []  # 0.035 <= 2 * 0.018
    assert differences("acc 0.870 ± 0.010\n", "acc 0.920 ± 0.008\n", tol)  # 0.050 > 0.036
    assert differences("acc 0.870\n", "acc 0.871\n", tol), "without a printed spread there is no allowance"


def test_a_signed_difference_may_change_sign_within_its_spread():
    tol = Tolerance(spread=2, why="t")
    assert differences("bf16 - fp32: -0.003 ± 0.004\n", "bf16 - fp32: +0.002 ± 0.005\n", tol) == []
    assert differences("gain +0.300 ± 0.010\n", "gain -0.300 ± 0.010\n", tol), "a real sign flip is a change"
    assert differences("x+1\n", "x+2\n", Tolerance(abs=5, why="t")), "a plus glued to a word stays text"


def test_relative_tolerance_and_scientific_notation():
    tol = Tolerance(rel=0.1, why="t")
    assert differences("error 4.8e-07\n", "error 5.1e-07\n", tol) == []
    assert differences("error 4.8e-07\n", "error 9.0e-07\n", tol)


def test_aligned_columns_whose_width_changes_still_match():
    assert differences("a   0.50 | b 0.1\n", "a  -0.49 | b 0.1\n", Tolerance(abs=1.0, why="t")) == []
    assert differences("a 0.5\nb 0.1\n", "a 0.5 b 0.1\n", Tolerance(abs=1.0, why="t")), "newlines are text"


def test_reconcile_replaces_matching_texts_and_reports_the_rest():
    ref = [nbformat.v4.new_output("stream", name="stdout", text="acc 0.873\n"),
           nbformat.v4.new_output("execute_result", data={"text/plain": "0.5"}, execution_count=1)]
    new = [nbformat.v4.new_output("stream", name="stdout", text="acc 0.861\n"),
           nbformat.v4.new_output("execute_result", data={"text/plain": "0.9"}, execution_count=1)]
    out, notes = reconcile(new, ref, ABS)
    assert out[0]["text"] == "acc 0.873\n" and out[1]["data"]["text/plain"] == "0.9"
    assert new[0]["text"] == "acc 0.861\n", "the fresh outputs themselves are not modified"
    assert len(notes) == 1 and "0.5 stored, 0.9 now" in notes[0]


@pytest.mark.parametrize("meta, message", [
    ({"abs": 0.1}, "must say 'why'"),
    ({"abs": -1, "why": "x"}, "must be a number >= 0"),
    ({"abbs": 0.1, "why": "x"}, "unknown tolerance key"),
    ({"why": "x"}, "at least one of"),
    (0.1, "must be a mapping"),
])
def test_malformed_tolerance_metadata_is_a_clear_error(meta, message):
    with pytest.raises(ToleranceError, match=message):
        Tolerance.from_metadata(meta, where="nb cell 3")


# ---------------------------------------------------------------- nbval itself, on notebooks written here
def _notebook(path, printed_now, printed_stored, tolerance=None):
    cell = nbformat.v4.new_code_cell(f"print({printed_now!r})", execution_count=1,
                                     outputs=[nbformat.v4.new_output("stream", name="stdout",
                                                                     text=printed_stored + "\n")])
    if tolerance is not None:
        cell.metadata["tolerance"] = tolerance
    nb = nbformat.v4.new_notebook(cells=[cell])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def _nbval(path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "--nbval", "--nbval-current-env", "-p", "no:cacheprovider",
                           "-p", "tests.nbval_tolerance",
                           "-q", "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml"), str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_nbval_applies_the_tolerance_only_where_a_cell_declares_it(tmp_path):
    """Four one-cell notebooks through real `pytest --nbval`: within tolerance passes; outside it, a changed word
    and an undeclared cell fail."""
    cases = {
        "within.ipynb": ("acc 0.861", "acc 0.873", {"abs": 0.02, "why": "t"}, True),
        "outside.ipynb": ("acc 0.841", "acc 0.873", {"abs": 0.02, "why": "t"}, False),
        "word.ipynb": ("MLP 0.873", "CNN 0.873", {"abs": 0.02, "why": "t"}, False),
        "undeclared.ipynb": ("acc 0.8731", "acc 0.873", None, False),
    }
    for name, (now, stored, tol, _) in cases.items():
        _notebook(tmp_path / name, now, stored, tol)
    for name, (*_, passes) in cases.items():
        r = _nbval(tmp_path / name)
        assert (r.returncode == 0) == passes, f"{name}:\n{r.stdout[-3000:]}"
        if name == "outside.ipynb":
            assert "0.873 stored, 0.841 now" in r.stdout, "the failure says which number moved and by how much"
