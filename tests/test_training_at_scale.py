"""The throughput sweep of notebook 07: best of several rounds, a fit that cannot go negative, a sentence read
off the data whatever it shows."""
import numpy as np
import pytest

from course.bench import BenchResult
from course.lessons import training_at_scale as lesson


def result(batch, step_ms):
    return BenchResult("m", batch, (8, 8, 1), "float32", 0.0, step_ms, 1000)


def test_fit_recovers_a_fixed_cost_and_a_cost_per_example():
    batches = [1, 4, 16, 64, 256]
    fixed, per_example = lesson.fixed_cost_fit(batches, [0.5 + 0.01 * b for b in batches])
    assert fixed == pytest.approx(0.5, rel=1e-6) and per_example == pytest.approx(0.01, rel=1e-6)


def test_fit_never_gives_a_negative_fixed_cost():
    # throughput falling with the batch (a loaded machine): unconstrained least squares gives a negative intercept
    batches, ms = [8, 64, 512], [1.7, 14.2, 136.0]
    assert np.polyfit(batches, ms, 1)[1] < 0
    fixed, per_example = lesson.fixed_cost_fit(batches, ms)
    assert fixed >= 0 and per_example > 0


def test_fit_refuses_one_batch_size():
    with pytest.raises(ValueError, match="two different batch sizes"):
        lesson.fixed_cost_fit([64, 64], [1.0, 1.1])


def test_sentence_names_the_best_batch_and_where_it_levels_off():
    rs = [result(1, 1.0), result(4, 1.6), result(16, 4.0), result(64, 15.0)]   # 1000, 2500, 4000, 4267 images/s
    text = lesson.describe_throughput(rs)
    assert text.startswith("batch 64 carries 4.3x the images per second of batch 1")
    assert "batch 16 is the first within 10% of the best" in text and "falls back" not in text
    falls = lesson.describe_throughput([*rs, result(256, 100.0)])   # 2560 images/s: 60% of the best
    assert falls.endswith("and batch 256 falls back to 60% of it")


def test_sentence_when_the_smallest_batch_is_fastest():
    text = lesson.describe_throughput([result(8, 1.0), result(64, 9.0), result(512, 80.0)])
    assert text.startswith("the smallest batch, 8, is already the fastest")


def test_sweep_keeps_the_fastest_round(monkeypatch):
    times = iter([3.0, 1.0, 2.0, 5.0, 4.0, 6.0])
    monkeypatch.setattr(lesson.bench, "bench_train_step", lambda name, batch, steps: result(batch, next(times)))
    rs = lesson.throughput_sweep("m", [1, 2], steps=1, repeats=3)
    assert [r.step_ms for r in rs] == [1.0, 4.0]
