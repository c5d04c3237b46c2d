"""Seeds and mean ± spread summaries (course/seeds.py), checked against numpy computed here."""
import numpy as np
import pytest

from course import seeds
from tests.nbval_tolerance import Tolerance, differences


def test_different_seed_parameters_give_disjoint_seed_sets():
    assert seeds.seeds(0) == [0, 1, 2] and seeds.seeds(1) == [3, 4, 5] and seeds.seeds(2, 5) == [10, 11, 12, 13, 14]
    with pytest.raises(ValueError, match="at least 1"):
        seeds.seeds(0, 0)


def test_spread_is_mean_and_sample_sd_and_prints_in_the_form_nbval_tolerance_reads():
    s = seeds.over_seeds(lambda k: [0.8, 0.9, 0.7][k], [0, 1, 2])
    assert s.mean == pytest.approx(0.8) and s.sd == pytest.approx(np.std([0.8, 0.9, 0.7], ddof=1))
    assert f"{s:.3f}" == "0.800 ± 0.100" and f"{s:+.2f}" == "+0.80 ± 0.10"
    other = seeds.Spread((0.85, 0.95, 0.80))
    assert differences(f"acc {s:.3f}", f"acc {other:.3f}", Tolerance(spread=1, why="t")) == []


def test_over_seeds_with_named_results_and_the_margin_rule():
    r = seeds.over_seeds(lambda k: {"a": 0.9 + 0.01 * k, "b": 0.5 - 0.01 * k}, [0, 1, 2])
    assert set(r) == {"a", "b"} and r["a"].values == (0.9, 0.91, 0.92)
    assert seeds.margin_holds(r["a"], r["b"]) and not seeds.margin_holds(r["b"], r["a"])
    assert not seeds.margin_holds(seeds.Spread((0.5, 0.7)), seeds.Spread((0.5, 0.6))), "0.05 < sd 0.14"


def test_stack_gives_per_epoch_mean_and_sd():
    m, sd = seeds.stack([[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_allclose(m, [2.0, 3.0])
    np.testing.assert_allclose(sd, [np.sqrt(2), np.sqrt(2)])
