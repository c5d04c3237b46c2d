"""course/claims.py: the intervals against scipy's own t tests, and the error rates over 10,000 simulated seed sets.

The rates asserted here are the ones the module's docstring states: a false "A beats B" passes at most 1% of seed
sets; an equivalence passes at most 1% where the true difference is delta; and the effects the notebooks assert
(about 8 sd or more with 3 seeds per arm, 4 sd with 5) pass at least 95% of the time. The simulations use normal
noise and a fixed generator, so the test is deterministic; 10,000 sets put the Monte Carlo sd of a 1% rate at 0.1%.
"""
import contextlib
import io
import json

import numpy as np
import pytest
from scipy import stats

from course import claims
from course.seeds import Spread

SETS = 10_000


def pass_rate(check, arm_a, arm_b, rng) -> float:
    """Fraction of SETS simulated seed sets (arm_a(rng), arm_b(rng)) for which ``check(a, b)`` holds; the claims'
    own printing is swallowed, keep-going is on so a failing claim counts as a failure rather than raising."""
    passed = 0
    with contextlib.redirect_stdout(io.StringIO()), pytest.MonkeyPatch.context() as mp:
        mp.setenv(claims.KEEP_GOING_ENV, "1")
        mp.delenv(claims.LOG_ENV, raising=False)
        for _ in range(SETS):
            passed += bool(check(arm_a(rng), arm_b(rng)).holds)
    return passed / SETS


def normal(mean, sd, n):
    return lambda rng: rng.normal(mean, sd, n)


def test_intervals_are_scipys_t_intervals():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.8, 0.02, 3), rng.normal(0.7, 0.05, 4)
    ref = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.98)
    iv = claims.difference(a, b)
    assert (iv.low, iv.high) == pytest.approx((ref.low, ref.high)) and iv.method == "Welch t, 3 v 4 seeds"
    c = rng.normal(0.75, 0.05, 3)
    ref = stats.ttest_rel(a, c).confidence_interval(0.98)
    iv = claims.difference(a, c, paired=True)
    assert (iv.low, iv.high) == pytest.approx((ref.low, ref.high)) and iv.df == 2
    ref = stats.ttest_1samp(a, 0).confidence_interval(0.98)
    assert (claims.mean_interval(a).low, claims.mean_interval(a).high) == pytest.approx((ref.low, ref.high))
    # a scaled difference a - 3 b is the difference of a and the values 3 b
    assert claims.difference(a, b, scale=3).half == pytest.approx(claims.difference(a, 3 * b).half)


def test_a_null_effect_passes_beats_at_most_one_percent():
    rng = np.random.default_rng(1)
    for n in (3, 5):
        rate = pass_rate(lambda a, b: claims.beats(a, b, "null"), normal(0, 1, n), normal(0, 1, n), rng)
        assert rate <= 0.0125, (n, rate)
    # unequal spreads (Welch), and the paired form
    rate = pass_rate(lambda a, b: claims.beats(a, b, "null"), normal(0, 3, 3), normal(0, 1, 3), rng)
    assert rate <= 0.0125, rate
    rate = pass_rate(lambda a, b: claims.beats(a, b, "null", paired=True), normal(0, 1, 3), normal(0, 1, 3), rng)
    assert rate <= 0.0125, rate


def test_effects_of_the_size_the_notebooks_assert_pass_at_least_95_percent():
    rng = np.random.default_rng(2)
    rate = pass_rate(lambda a, b: claims.beats(a, b, "8 sd, 3 v 3"), normal(8, 1, 3), normal(0, 1, 3), rng)
    assert rate >= 0.95, rate
    rate = pass_rate(lambda a, b: claims.beats(a, b, "4 sd, 5 v 5"), normal(4, 1, 5), normal(0, 1, 5), rng)
    assert rate >= 0.95, rate
    # "a > 3 b" with b's noise tripled: 3 x 0.1 +- 3 x 0.01 against 0.5 +- 0.01
    rate = pass_rate(lambda a, b: claims.beats(a, b, "ratio", scale=3), normal(0.5, 0.01, 3),
                     normal(0.1, 0.01, 3), rng)
    assert rate >= 0.95, rate


def test_equivalence_has_the_same_error_rate_and_the_power_the_notebooks_need():
    rng = np.random.default_rng(3)
    for n, delta in ((3, 8.0), (5, 4.0)):
        at_bound = pass_rate(lambda a, b: claims.equivalent(a, b, "at delta", delta=delta),
                             normal(delta, 1, n), normal(0, 1, n), rng)
        assert at_bound <= 0.0125, (n, at_bound)
        none = pass_rate(lambda a, b: claims.equivalent(a, b, "no difference", delta=delta),
                         normal(0, 1, n), normal(0, 1, n), rng)
        assert none >= 0.95, (n, none)
    # a noisy experiment cannot pass "no difference" by being noisy: 3 seeds, delta = 2 sd, true difference 0
    weak = pass_rate(lambda a, b: claims.equivalent(a, b, "too noisy", delta=2.0), normal(0, 1, 3),
                     normal(0, 1, 3), rng)
    assert weak < 0.1, weak


def test_one_sample_bounds():
    rng = np.random.default_rng(4)
    rate = pass_rate(lambda a, b: claims.exceeds(a, 0.5, "at the bound"), normal(0.5, 0.1, 3), normal(0, 1, 1), rng)
    assert rate <= 0.0125
    rate = pass_rate(lambda a, b: claims.below(a, 0.5, "at the bound"), normal(0.5, 0.1, 3), normal(0, 1, 1), rng)
    assert rate <= 0.0125


def test_a_claim_prints_its_interval_in_the_form_the_stored_output_comparison_reads(capsys, monkeypatch):
    from tests.nbval_tolerance import Tolerance, differences
    monkeypatch.delenv(claims.KEEP_GOING_ENV, raising=False)
    monkeypatch.delenv(claims.LOG_ENV, raising=False)
    a, b = Spread((0.97, 0.96, 0.98)), Spread((0.80, 0.81, 0.82))
    half = claims.difference(a, b).half
    assert claims.beats(a, b, "ResNet-14 − plain-14, accuracy").holds
    line = capsys.readouterr().out.strip()
    assert line == f"claim  ResNet-14 − plain-14, accuracy: +0.160 ± {half:.3f} > 0 (98%, Welch t, 3 v 3 seeds): holds"
    # another seed set: the estimate and half-width move within the half-widths, the words stay
    assert claims.beats(Spread((0.95, 0.97, 0.96)), Spread((0.82, 0.83, 0.84)), "ResNet-14 − plain-14, accuracy").holds
    assert differences(line, capsys.readouterr().out.strip(), Tolerance(spread=2, why="t")) == []
    assert claims.report(Spread((0.5, 0.6, 0.7)), Spread((0.5, 0.55, 0.6)), "a − b").holds is None
    out = capsys.readouterr().out.strip()
    assert out.startswith("interval  a − b: +0.050 ± ") and out.endswith("(98%, Welch t, 3 v 3 seeds)")
    claims.equivalent(a, b, "a ≈ b", delta=0.5)
    claims.below(a, 1.05, "a")
    out = capsys.readouterr().out.splitlines()
    assert "within ±0.5 (98%" in out[0] and out[1] == "claim  a: 0.970 ± 0.040 < 1.05 (98%, t, 3 seeds): holds"


def test_a_failing_claim_raises_naming_itself_unless_a_sweep_keeps_going(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(claims.KEEP_GOING_ENV, raising=False)
    log = tmp_path / "claims.jsonl"
    monkeypatch.setenv(claims.LOG_ENV, str(log))
    a, b = Spread((0.80, 0.82, 0.84)), Spread((0.81, 0.83, 0.79))
    with pytest.raises(claims.ClaimError, match=r"CNN − MLP: the 98% interval \[.*\] does not support"):
        claims.beats(a, b, "CNN − MLP")
    monkeypatch.setenv(claims.KEEP_GOING_ENV, "1")
    assert claims.beats(a, b, "CNN − MLP").holds is False and capsys.readouterr().out.rstrip().endswith("FAILS")
    claims.equivalent(a, b, "CNN ≈ MLP", delta=0.5)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["claim"], r["kind"], r["holds"]) for r in rows] == [
        ("CNN − MLP", "beats", False), ("CNN − MLP", "beats", False), ("CNN ≈ MLP", "equivalent", True)]
    assert rows[2]["low"] < rows[2]["estimate"] < rows[2]["high"] and rows[2]["confidence"] == 0.98


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 2 seeds"):
        claims.difference([0.5], [0.4, 0.3])
    with pytest.raises(ValueError, match="same seeds"):
        claims.difference([0.5, 0.6], [0.4, 0.3, 0.2], paired=True)
    with pytest.raises(ValueError, match="delta must be > 0"):
        claims.equivalent([0.5, 0.6], [0.4, 0.3], "x", delta=0)


def test_numpy_bounds_give_plain_outcomes_that_the_log_can_write(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(claims.LOG_ENV, str(tmp_path / "log.jsonl"))
    c = claims.exceeds(np.array([0.5, 0.6, 0.55]), np.log10(2), "numpy bound")
    assert c.holds is True and json.loads((tmp_path / "log.jsonl").read_text())["bound"] == pytest.approx(np.log10(2))
