"""Notebook 05's sliding window: the one-pass class-score map against crops with and without their real
surroundings, where the digits sit in a larger image, which windows hold them, and how right a map is."""
from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

from course import transfer
from course.lessons import bottleneck_features as bf
from course.models.simple import SmallCNN


@pytest.fixture(scope="module")
def tiny():
    """A small random SmallCNN (4-8-16 channels) and a probe with some random statistics, so biases matter."""
    net = SmallCNN(1, 3, channels=(4, 8, 16), rngs=nnx.Rngs(0))
    probe = transfer.restandardised(transfer.LinearProbe(16, 3, seed=0),
                                    np.random.default_rng(0).random((20, 16), dtype=np.float32))
    return net, probe


def test_crops_with_their_surroundings_are_the_one_pass_map(tiny):
    net, probe = tiny
    big = np.random.default_rng(1).random((2, 32, 48, 1), dtype=np.float32)
    one_pass = bf.class_score_map(net, probe, big)                       # (2, 5, 9, 3)
    plain = bf.window_scores(net, probe, big)
    framed = bf.window_scores(net, probe, big, context=8)
    np.testing.assert_allclose(bf.window_scores(net, probe, big, context=0), plain)
    # windows whose 8 px of surroundings lie inside the image: rows 8..24, columns 8..40 of the windows' corners
    inner = (slice(2, 3), slice(2, 7))
    np.testing.assert_allclose(framed[:, inner[0], inner[1]], one_pass[:, inner[0], inner[1]], rtol=1e-4, atol=1e-4)
    assert np.abs(plain - one_pass).max() > 1e-2  # without them the crops differ
    with pytest.raises(ValueError, match="multiples"):
        bf.window_scores(net, probe, big, context=6)


def test_place_digits_and_the_windows_that_hold_them():
    d = np.ones((1, 2, 8, 8, 1), np.float32) * np.array([1.0, 2.0]).reshape(1, 2, 1, 1, 1)
    img = bf.place_digits(d, [(8, 8), (16, 32)], (32, 48))
    assert img.shape == (1, 32, 48, 1) and img.sum() == 64 * 3
    assert img[0, 4, 4, 0] == 1 and img[0, 12, 28, 0] == 2 and img[0, 3, 4, 0] == 0
    kinds = bf.window_kinds((5, 9), [(8, 8), (16, 32)])
    assert tuple(kinds[0, 0]) == (0, 0) and tuple(kinds[2, 6]) == (1, 0)  # centred on digit 0 and on digit 1
    assert tuple(kinds[1, 1]) == (0, 4) and tuple(kinds[3, 7]) == (1, 4)   # a whole digit, 4 px off centre
    assert kinds[0, 2, 0] == -2 and tuple(kinds[4, 0]) == (-1, 0)          # part of a digit; nothing
    with pytest.raises(ValueError, match="does not fit"):
        bf.place_digits(d, [(2, 8), (16, 32)], (32, 48))


def test_window_outcomes_count_right_windows_and_confident_empty_ones():
    kinds = bf.window_kinds((2, 3), [(8, 8)], size=16, stride=4)  # map 2x3: image 20x24, one digit at (8, 8)
    assert [tuple(kinds[i, j]) for i in range(2) for j in range(3)] == [(0, 0), (0, 4), (-2, 0), (0, 4), (0, 4),
                                                                        (-2, 0)]
    scores = np.zeros((1, 2, 3, 3))
    scores[0, 0, 0, 2] = 5.0       # centred: class 2, right
    scores[0, 0, 1, 2] = 5.0       # off centre: right
    scores[0, 1, 0, 1] = 5.0       # off centre: wrong
    scores[0, 1, 1, 2] = 0.1       # off centre: right, barely
    out = bf.window_outcomes(scores, np.array([[2]]), kinds)
    assert out["centred"] == 1.0 and out["off centre"] == pytest.approx(2 / 3)
    kinds = bf.window_kinds((2, 3), [(4, 4)], size=8, stride=4, digit=4)
    assert (kinds[..., 0] == -1).sum() == 2  # the two windows of the right-hand column hold nothing
    empty = np.zeros((1, 2, 3, 3))
    empty[0, 0, 2, 0] = 5.0        # one empty window called class 0 with p = 0.99, the other uniform
    assert bf.window_outcomes(empty, np.array([[0]]), kinds)["empty, confident"] == 0.5


def test_score_map_figure_colours_every_window(tiny):
    net, probe = tiny
    big = np.zeros((1, 32, 48, 1), np.float32)
    scores = bf.class_score_map(net, probe, big)[0]
    fig = bf.plot_score_map(big[0, ..., 0], {"one pass": scores, "crop by crop": scores}, ("a", "b", "c"),
                            [(8, 8), (16, 32)], [0, 1])
    texts = [t for t in fig.axes[0].texts]
    assert len(fig.axes) == 2 and len(texts) == 5 * 9
    assert all(t.get_fontsize() >= 9 for t in texts)
