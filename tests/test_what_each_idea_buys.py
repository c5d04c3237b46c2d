"""Notebook 08's models and helpers: every family's count against a hand derivation, the Pareto front on known sets.

The hand derivations write each layer out from its sizes (weights + biases, BatchNorm scale + shift; MACs =
output positions x output channels x kernel taps x input channels), independently of course.counting's code path.
Inputs are 12x12x1, the notebook's small scale.
"""
import numpy as np
import pytest

from course.lessons import what_each_idea_buys as lesson

SHAPE = (12, 12, 1)
MEMBERS = {m.name: m for m in lesson.members()}


def conv(k, cin, cout, positions, bias=True, bn=False):
    """(params, MACs) of a k x k conv at ``positions`` output pixels, with bias or with BatchNorm after it."""
    return k * k * cin * cout + (cout if bias else 0) + (2 * cout if bn else 0), positions * k * k * cin * cout


def total(*layers):
    return tuple(map(sum, zip(*layers)))


def dense(a, b):
    return a * b + b, a * b


HAND = {
    # flatten 144 -> 64 -> 10
    "MLP-64": total(dense(144, 64), dense(64, 10)),
    # conv 1->8 at 12x12, pool, 8->16 at 6x6, pool, 16->32 at 3x3, GAP, fc 32->10
    "CNN-8": total(conv(3, 1, 8, 144), conv(3, 8, 16, 36), conv(3, 16, 32, 9), dense(32, 10)),
    # stem 1->8; Inception(8; 1x1 4, 3x3 4->8, 5x5 2->4, pool proj 4) at 12x12 -> 20 channels; pool;
    # Inception(20; 8, 8->16, 2->4, 4) at 6x6 -> 32 channels; GAP; fc
    "Inception-S": total(conv(3, 1, 8, 144),
                         conv(1, 8, 4, 144), conv(1, 8, 4, 144), conv(3, 4, 8, 144), conv(1, 8, 2, 144),
                         conv(5, 2, 4, 144), conv(1, 8, 4, 144),
                         conv(1, 20, 8, 36), conv(1, 20, 8, 36), conv(3, 8, 16, 36), conv(1, 20, 2, 36),
                         conv(5, 2, 4, 36), conv(1, 20, 4, 36), dense(32, 10)),
    # stem 1->8; naive(8; 1x1 4, 3x3 8, 5x5 4, pool passes 8) -> 24; pool; naive(24; 8, 16, 4, +24) -> 52
    "Inception-naive-S": total(conv(3, 1, 8, 144),
                               conv(1, 8, 4, 144), conv(3, 8, 8, 144), conv(5, 8, 4, 144),
                               conv(1, 24, 8, 36), conv(3, 24, 16, 36), conv(5, 24, 4, 36), dense(52, 10)),
    # 3x3 stem 1->8 + BN; basic block 8->8 at 12x12; 8->16 stride 2 (6x6); 16->32 stride 2 (3x3); zero-padded
    # shortcuts have no parameters; convs have no bias
    "ResNet-8": total(conv(3, 1, 8, 144, False, True),
                      conv(3, 8, 8, 144, False, True), conv(3, 8, 8, 144, False, True),
                      conv(3, 8, 16, 36, False, True), conv(3, 16, 16, 36, False, True),
                      conv(3, 16, 32, 9, False, True), conv(3, 32, 32, 9, False, True), dense(32, 10)),
    # bottleneck blocks, stride in the 3x3 (v1.5): the first 1x1 of a downsampling block runs at the input size
    "ResNet-bneck-11": total(conv(3, 1, 4, 144, False, True),
                             conv(1, 4, 4, 144, False, True), conv(3, 4, 4, 144, False, True),
                             conv(1, 4, 16, 144, False, True),
                             conv(1, 16, 8, 144, False, True), conv(3, 8, 8, 36, False, True),
                             conv(1, 8, 32, 36, False, True),
                             conv(1, 32, 16, 36, False, True), conv(3, 16, 16, 9, False, True),
                             conv(1, 16, 64, 9, False, True), dense(64, 10)),
}
HAND["plain-8"] = HAND["ResNet-8"]  # the same network with its shortcuts off


@pytest.fixture(scope="module")
def tables():
    return lesson.counts(list(MEMBERS.values()), SHAPE)


@pytest.mark.parametrize("name", sorted(HAND))
def test_counts_match_a_hand_derivation(tables, name):
    params, macs = HAND[name]
    assert (tables[name].params_total, tables[name].macs) == (params, macs)


def test_every_family_has_a_hand_checked_member_and_two_sizes():
    fams = {m.family for m in MEMBERS.values()}
    assert {MEMBERS[n].family for n in HAND} == fams
    for fam in fams:
        assert sum(m.family == fam for m in MEMBERS.values()) >= 2, fam


def test_sizes_grow_within_a_family_and_reductions_cut_macs(tables):
    by_family = {}
    for m in lesson.members():
        by_family.setdefault(m.family, []).append(tables[m.name].macs)
    assert all(a < b for v in by_family.values() for a, b in zip(v, v[1:]))
    for size in "SL":
        assert tables[f"Inception-{size}"].macs < tables[f"Inception-naive-{size}"].macs


def test_plain_member_runs_without_shortcuts():
    import jax

    x = jax.random.uniform(jax.random.key(0), (2, *SHAPE))
    plain = lesson.build(MEMBERS["plain-8"], SHAPE, 3)
    res = lesson.build(MEMBERS["ResNet-8"], SHAPE, 3)
    plain.eval(), res.eval()
    assert float(plain.shortcut_gate[...]) == 0.0 and float(res.shortcut_gate[...]) == 1.0
    assert not np.allclose(np.asarray(plain(x)), np.asarray(res(x)))


def test_pareto_front_on_a_known_set():
    # cost, accuracy: (1, .5) front; (2, .4) dominated by it; (3, .9) front; (3, .8) dominated; (5, .9) dominated
    # (same accuracy, more cost); (6, .95) front
    costs = [1, 2, 3, 3, 5, 6]
    accs = [0.5, 0.4, 0.9, 0.8, 0.9, 0.95]
    assert lesson.pareto_front(costs, accs) == [True, False, True, False, False, True]
    assert lesson.pareto_front([1.0], [0.1]) == [True]
    assert lesson.pareto_front([1, 1], [0.5, 0.5]) == [True, True]  # ties dominate nobody


@pytest.mark.parametrize("costs, accs, match", [
    ([1, 2], [0.5], "same length"),
    ([], [], "at least one"),
    ([1, 2], [0.5, float("nan")], "finite"),
])
def test_pareto_front_bad_input_is_a_clear_error(costs, accs, match):
    with pytest.raises(ValueError, match=match):
        lesson.pareto_front(costs, accs)


def test_beaten_by_reads_the_98_percent_interval_not_the_one_sd_rule():
    from course.seeds import Spread, margin_holds

    res = {"X": Spread((0.50, 0.52, 0.54)),      # cost 10
           "far": Spread((0.80, 0.81, 0.82)),    # cheaper, beats X by far: +0.29, 98% interval +-0.06
           "near": Spread((0.55, 0.57, 0.59)),   # cheaper, +0.05: beyond one sd, not beyond the interval
           "dear": Spread((0.90, 0.91, 0.92))}   # more accurate but costs more: not "beaten by a cheaper member"
    cost = {"X": 10, "far": 5, "near": 5, "dear": 20}
    results = {n: {"test": v} for n, v in res.items()}
    assert margin_holds(res["near"], res["X"])  # what the old rule accepted
    assert lesson.beaten_by("X", cost, results) == ["far"]
    assert lesson.beaten_by("far", cost, results) == []
    with pytest.raises(KeyError, match="not among the members"):
        lesson.beaten_by("Y", cost, results)


def test_inception_rows_are_checked():
    from flax import nnx

    with pytest.raises(ValueError, match="two .*tuples"):
        lesson.InceptionNet(1, 10, 8, ((4, 4, 8, 2, 4, 4),), rngs=nnx.Rngs(0))


def test_run_study_and_step_seconds_reject_empty_input():
    with pytest.raises(ValueError, match="seed_list is empty"):
        lesson.run_study(list(MEMBERS.values())[:1], lambda s: None, [], epochs=1)
    with pytest.raises(ValueError, match="at least 1"):
        lesson.step_seconds(MEMBERS["MLP-64"], SHAPE, steps=0)


def test_run_study_trains_and_summarises_over_seeds():
    from course import data

    ds = data.digits(12)
    small = data.Dataset("d", ds.x_train[:256], ds.y_train[:256], ds.x_test[:128], ds.y_test[:128], ds.classes)
    res = lesson.run_study([MEMBERS["MLP-64"]], lambda s: small, [0, 1], epochs=2)
    spread = res["MLP-64"]["test"]
    assert len(spread.values) == 2 and 0.0 <= spread.mean <= 1.0
    assert res["MLP-64"]["train"].mean > 0.2  # better than chance (0.1) after 8 steps of Adam at lr 3e-3


def test_runs_side_by_side_give_the_numbers_of_runs_one_after_another():
    from course import data

    ds = data.digits(12)
    small = data.Dataset("d", ds.x_train[:256], ds.y_train[:256], ds.x_test[:128], ds.y_test[:128], ds.classes)
    pick = [MEMBERS["MLP-64"], MEMBERS["CNN-8"], MEMBERS["ResNet-8"], MEMBERS["plain-8"]]
    one = lesson.run_study(pick, lambda s: small, [0, 1], epochs=1, workers=1)
    two = lesson.run_study(pick, lambda s: small, [0, 1], epochs=1, workers=2)
    assert {n: (r["test"].values, r["train"].values) for n, r in one.items()} == \
           {n: (r["test"].values, r["train"].values) for n, r in two.items()}


def test_table_lists_every_member(tables):
    from course.seeds import Spread

    res = {n: {"test": Spread((0.5, 0.6)), "train": Spread((0.7, 0.7))} for n in MEMBERS}
    text = lesson.table(list(MEMBERS.values()), tables, res)
    assert all(n in text for n in MEMBERS) and "0.550 ± 0.071" in text and "9,930" in text


def test_every_member_builds_for_cifar_inputs():
    """SCALE = "full" builds the same members for 32x32x3 CIFAR-10 images; the MLP's first layer grows with the
    input, the convolutional members' parameters do not (global average pool), except for the stem's input channels."""
    big = lesson.counts(list(MEMBERS.values()), (32, 32, 3))
    assert big["MLP-64"].params_total == HAND["MLP-64"][0] + (32 * 32 * 3 - 144) * 64
    assert big["CNN-8"].params_total == HAND["CNN-8"][0] + 2 * 9 * 8
    assert all(big[n].macs > HAND[n][1] for n in HAND)


# stem 1->8; Inception(8; 1x1 7, 3x3 7->14, 5x5 3->7, pool proj 7) at 12x12 -> 35 channels; pool;
# Inception(35; 14, 14->27, 3->7, 7) at 6x6 -> 55 channels; GAP; fc
HAND_WIDE = total(conv(3, 1, 8, 144),
                  conv(1, 8, 7, 144), conv(1, 8, 7, 144), conv(3, 7, 14, 144), conv(1, 8, 3, 144),
                  conv(5, 3, 7, 144), conv(1, 8, 7, 144),
                  conv(1, 35, 14, 36), conv(1, 35, 14, 36), conv(3, 14, 27, 36), conv(1, 35, 3, 36),
                  conv(5, 3, 7, 36), conv(1, 35, 7, 36), dense(55, 10))


def test_matched_cost_pair_costs_what_the_naive_network_costs(tables):
    """Inception-S-wide, the reduced modules widened, costs what Inception-naive-S costs: within 1 % of its MACs
    and no more parameters (GoogLeNet's claim is about equal cost), counted by hand."""
    wide, naive = lesson.MATCHED
    assert (tables[wide].params_total, tables[wide].macs) == HAND_WIDE
    assert 0.99 < tables[wide].macs / tables[naive].macs <= 1.0
    assert tables[wide].params_total < tables[naive].params_total
    assert MEMBERS[wide].family == "Inception" and MEMBERS[naive].family == "Inception, no 1x1 reductions"


def test_front_members_of_the_means():
    from course.seeds import Spread

    ms = [lesson.Member(n, "f", None) for n in "abcd"]
    res = {"a": {"test": Spread((0.5, 0.5))}, "b": {"test": Spread((0.4, 0.4))},
           "c": {"test": Spread((0.8, 0.9))}, "d": {"test": Spread((0.7, 0.7))}}
    assert lesson.front_members(ms, {"a": 1, "b": 2, "c": 5, "d": 3}, res) == ["a", "d", "c"]  # b dominated by a
    assert lesson.front_members(ms, {"a": 9, "b": 2, "c": 5, "d": 3}, res) == ["b", "d", "c"]


def test_run_study_measures_training_accuracy_as_test_accuracy_is():
    """``"train"`` is eval mode after the last epoch (with train_eval >= the training set: the accuracy
    ``training.evaluate`` gives on all of it), ``"running"`` the running train-mode mean; without train_eval only
    the running mean is there."""
    from course import data, training

    ds = data.digits(12)
    small = data.Dataset("d", ds.x_train[:128], ds.y_train[:128], ds.x_test[:64], ds.y_test[:64], ds.classes)
    m = MEMBERS["ResNet-8"]
    res = lesson.run_study([m], lambda s: small, [0, 1], epochs=1, train_eval=1000)
    model = lesson.build(m, SHAPE, 1)
    training.fit(model, (small.x_train, small.y_train), epochs=1, batch_size=64, lr=3e-3, seed=1, verbose=False)
    assert res[m.name]["train"].values[1] == pytest.approx(
        training.evaluate(model, small.x_train, small.y_train)["accuracy"])
    assert res[m.name]["test"].values[1] == pytest.approx(
        training.evaluate(model, small.x_test, small.y_test)["accuracy"])
    assert set(res[m.name]) == {"test", "train", "running"}
    assert set(lesson.run_study([m], lambda s: small, [0, 1], epochs=1, train_eval=None)[m.name]) == {
        "test", "running"}


def test_table_names_how_each_accuracy_is_measured(tables):
    from course.seeds import Spread

    res = {n: {"test": Spread((0.5, 0.6)), "train": Spread((0.7, 0.7)), "running": Spread((0.4, 0.4))}
           for n in MEMBERS}
    head = lesson.table(list(MEMBERS.values()), tables, res).splitlines()[:2]
    assert "running training" in head[0] and head[1].count("(eval mode)") == 2 and "(train mode)" in head[1]


def test_every_point_of_the_front_plot_is_labelled_and_no_labels_overlap(tables):
    """Fifteen points per panel, each with its own label (plain-8 and ResNet-8 share an x: the labels tell them
    apart), no two labels overlapping, every text at least 9 pt; the minor ticks of the log axes unlabelled."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.text import Annotation, Text

    from course.seeds import Spread

    rng = np.random.default_rng(0)
    res = {n: {"test": Spread(tuple(rng.uniform(0.3, 0.9, 3)))} for n in MEMBERS}
    res["ResNet-8"] = {"test": Spread((0.80, 0.81, 0.82))}
    res["plain-8"] = {"test": Spread((0.79, 0.80, 0.81))}  # nearly on top of its twin
    members = list(MEMBERS.values())
    costs = {"MACs per example": {n: t.macs for n, t in tables.items()},
             "parameters": {n: t.params_total for n, t in tables.items()}}
    fig = lesson.plot_front(members, costs, res)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        anns = [a for a in ax.texts if isinstance(a, Annotation)]
        assert sorted(a.get_text() for a in anns) == sorted(lesson.short_name(n) for n in MEMBERS)
        boxes = [Text.get_window_extent(a, renderer) for a in anns]  # the text, without its leader line
        assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
        assert all(t.get_text() == "" for t in ax.xaxis.get_minorticklabels())
    texts = [t for t in fig.findobj(Text) if t.get_text().strip() and t.get_visible()]
    assert min(t.get_fontsize() for t in texts) >= 9


def test_measuring_the_last_epoch_only_gives_the_numbers_of_one_fit_call():
    """run_study measures the eval-mode training accuracy after the last epoch only; weights, batches, optimizer
    state and the training subset are those of one ``fit(..., train_eval=N)`` call."""
    from course import data, training

    ds = data.digits(12)
    x, y = ds.x_train[:192], ds.y_train[:192]
    for name in ("ResNet-8", "CNN-8"):
        a, b = lesson.build(MEMBERS[name], SHAPE, 4), lesson.build(MEMBERS[name], SHAPE, 4)
        one = training.fit(a, (x, y), epochs=3, batch_size=64, lr=3e-3, seed=4, verbose=False, train_eval=100)
        last = lesson.fit_measuring_last_epoch(b, (x, y), epochs=3, batch_size=64, lr=3e-3, seed=4, train_eval=100)
        assert last.train_eval_accuracy == one.train_eval_accuracy[-1:]
        assert last.train_accuracy == one.train_accuracy[-1:] and last.epoch == [3]
        assert training.evaluate(a, ds.x_test, ds.y_test) == training.evaluate(b, ds.x_test, ds.y_test)
