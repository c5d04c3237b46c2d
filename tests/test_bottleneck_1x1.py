"""Notebook 02's lesson module (course/lessons/bottleneck_1x1.py) against arithmetic written out here by hand:
the mini-Inception networks' MACs, XLA's FLOP count against the formula, and figures readable on a projector."""
import matplotlib.pyplot as plt
import numpy as np
import pytest
from flax import nnx
from matplotlib.text import Text

from course import counting, models
from course.lessons import bottleneck_1x1 as ic
from course.models.inception import PAPER_LAYOUT, InceptionRow
from course.seeds import Spread


def _abstract_mini(reduce):
    return nnx.eval_shape(lambda: ic.MiniInception(reduce, rngs=nnx.Rngs(0)))


def _mini_macs_by_hand(reduce):
    """Stem 3x3 (1 -> 32) on 8x8; module A on 8x8 from 32 channels; module B on 4x4; linear. #1x1, #3x3, #5x5 =
    8, 16, 8; with reductions both reduces are r and pool proj is 8, naive passes the input channels on."""
    stem = 8 * 8 * 9 * 1 * 32
    if reduce is None:
        a = 8 * 8 * (32 * 8 + 9 * 32 * 16 + 25 * 32 * 8)
        b_in = 8 + 16 + 8 + 32
        b = 4 * 4 * (b_in * 8 + 9 * b_in * 16 + 25 * b_in * 8)
        out = 8 + 16 + 8 + b_in
    else:
        r = reduce
        a = 8 * 8 * (32 * 8 + 32 * r + 9 * r * 16 + 32 * r + 25 * r * 8 + 32 * 8)
        b_in = 8 + 16 + 8 + 8
        b = 4 * 4 * (b_in * 8 + b_in * r + 9 * r * 16 + b_in * r + 25 * r * 8 + b_in * 8)
        out = 40
    return stem + a + b + out * 10


@pytest.mark.parametrize("reduce", [1, 8, None])
def test_mini_inception_macs_match_arithmetic_by_hand(reduce):
    assert counting.count(_abstract_mini(reduce), (8, 8, 1)).macs == _mini_macs_by_hand(reduce)


def test_mini_inception_reductions_cut_the_cost_and_keep_the_width_narrow():
    assert _mini_macs_by_hand(8) == 325_008 and _mini_macs_by_hand(None) == 1_100_736  # the notebook's numbers
    naive, reduced = _abstract_mini(None), _abstract_mini(8)
    assert naive.inception_b.out_ch == 96 and reduced.inception_b.out_ch == 40  # the pool branch passes 64 on


def test_mini_inception_runs_on_a_batch_and_rejects_a_bad_width():
    m = ic.MiniInception(4, rngs=nnx.Rngs(0))
    assert m(np.zeros((3, 8, 8, 1), np.float32)).shape == (3, 10)
    for bad in (0, -2, 2.5, True, "8"):
        with pytest.raises(ValueError, match="reduce must be None .* or a positive int"):
            ic.MiniInception(bad, rngs=nnx.Rngs(0))


def test_train_mini_learns_the_digits():
    # 2 epochs are far from the notebook's 8, but far above chance (0.1) if training works at all
    assert ic.train_mini(8, seed=0, epochs=2) > 0.5


def test_xla_by_kernel_reconciles_with_xla_itself():
    model = models.build("googlenet", abstract=True)
    table = counting.count(model, (224, 224, 3), "googlenet", mode="eval")
    rows = ic.xla_by_kernel(model, table)
    assert [r["kind"] for r in rows] == ["Conv7x7", "Conv1x1", "Conv3x3", "Conv5x5", "Linear"]
    assert sum(r["layers"] for r in rows) == 2 + 1 + 9 * 6 + 1  # conv1, conv2 pair, nine modules, fc
    assert sum(r["macs"] for r in rows) == table.macs and sum(r["xla_formula"] for r in rows) == table.xla_flops
    for r in rows:
        assert r["flops"] - r["padding_taps_flops"] + r["bias_adds"] == r["xla_formula"] == r["xla_measured"]
    one = next(r for r in rows if r["kind"] == "Conv1x1")
    assert one["padding_taps_flops"] == 0  # a 1x1 kernel never reads the padding
    assert all(r["padding_taps_flops"] > 0 for r in rows if r["kind"] in ("Conv3x3", "Conv5x5", "Conv7x7"))


def _small_texts(fig, minimum=9.0):
    return [(t.get_text(), t.get_fontsize()) for t in fig.findobj(Text)
            if t.get_visible() and t.get_text().strip() and t.get_fontsize() < minimum]


def test_figures_have_no_text_below_9_points():
    rows = {item.name: item for item in PAPER_LAYOUT if isinstance(item, InceptionRow)}
    table = counting.count(models.build("googlenet", abstract=True), (224, 224, 3), "googlenet", mode="eval")
    figs = [ic.plot_branch_costs(ic.naive_vs_reduced(rows["3a"], 192, 28), title="3a"),
            ic.plot_channel_growth(ic.channel_growth()),
            ic.plot_table1_ratios(ic.compare_with_table1(table)),  # conv1's bar is clipped: it has a value label
            ic.plot_accuracy_vs_macs({"a": (1_000, Spread((0.8, 0.9))), "b": (10_000, Spread((0.95, 0.96)))})]
    try:
        for fig in figs:
            assert _small_texts(fig) == []
        assert any("x3.40" in t.get_text() for t in figs[2].findobj(Text))  # the clipped bar's label exists
    finally:
        for fig in figs:
            plt.close(fig)
