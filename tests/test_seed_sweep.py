"""tools/seed_sweep.py: a small notebook swept over seeds end to end, and the table read back from its logs."""
import json

import nbformat
import pytest

from tools import seed_sweep

CLAIMS = """\
from course import claims
from course.seeds import Spread
a = Spread(tuple(0.9 + 0.001 * (SEED + k) for k in range(3)))
b = Spread(tuple(0.5 + 0.002 * k for k in range(3)))
claims.beats(a, b, "a − b")
claims.beats(b, a, "b − a, wrong at every seed")
if SEED == 3:
    raise RuntimeError("broken at 3")
claims.report(a, b, "a − b, reported")
"""


def write_notebook(path):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("SEED = 0")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(CLAIMS)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.mark.slow
def test_a_sweep_records_every_claim_keeps_going_past_a_failing_one_and_fails(tmp_path, capsys):
    nb = tmp_path / "99_toy.ipynb"
    write_notebook(nb)
    out = tmp_path / "seeds"
    assert seed_sweep.main([str(nb), "--seeds", "2", "3", "--out", str(out), "--jobs", "2"]) == 1
    printed = capsys.readouterr()
    logs = seed_sweep.read_logs(out)
    assert sorted(logs["99_toy"]) == [2, 3]
    assert [(r["claim"], r["holds"]) for r in logs["99_toy"][2]] == [
        ("a − b", True), ("b − a, wrong at every seed", False), ("a − b, reported", None)]
    assert "99_toy SEED=3: did not run to its end" in printed.err and "RuntimeError" in printed.err
    assert "99_toy SEED=2: b − a, wrong at every seed: fails" in printed.err
    assert "99_toy SEED=3: a − b, reported" not in printed.err  # a report claims nothing, reached or not
    row = next(line for line in printed.out.splitlines() if line.startswith("99 a − b "))
    assert row.split()[-1] == "2/2" and "✓+0.401  ✓+0.402" in row


def test_the_table_from_logs(tmp_path, capsys):
    def record(claim, holds, kind="beats", est=0.1):
        return {"claim": claim, "kind": kind, "estimate": est, "low": est - 0.05, "high": est + 0.05,
                "bound": 0.0, "confidence": 0.98, "method": "Welch t, 3 v 3 seeds", "holds": holds}
    for seed, holds in ((0, True), (2, True), (3, False)):
        (tmp_path / f"01_x.seed{seed}.jsonl").write_text(
            "\n".join(json.dumps(r) for r in (record("cnn − mlp", holds), record("tie", None, "report"),
                                              record("cnn − mlp", True))))
    table = seed_sweep.rows(seed_sweep.read_logs(tmp_path))
    assert [(r["claim"], sorted(r["at"])) for r in table] == [("cnn − mlp", [0, 2, 3]), ("tie", [0, 2, 3]),
                                                              ("cnn − mlp", [0, 2, 3])]
    assert seed_sweep.failures(table, [2, 3, 4]) == [
        "01_x SEED=3: cnn − mlp: fails", "01_x SEED=4: cnn − mlp: not reached", "01_x SEED=4: cnn − mlp: not reached"]
    md = seed_sweep.markdown(table, [2, 3]).splitlines()
    assert md[2] == "| 01 | cnn − mlp | beats (Welch t) | +0.100 ± 0.050 > 0 | 1/2 |"
    assert md[3] == "| 01 | tie | report (Welch t) | +0.100 ± 0.050 | (report: claims nothing) |"
    seed_sweep.print_table(table, [2, 3])
    assert capsys.readouterr().out.splitlines()[1].endswith("✓+0.100  ✓+0.100  ✗+0.100   1/2")


def test_bad_arguments_are_clear_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        seed_sweep.main([str(tmp_path / "missing.ipynb"), "--seeds", "2"])
    assert "no such notebook" in capsys.readouterr().err
