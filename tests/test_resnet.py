"""ResNet (course/models/resnet.py) against independent references: torchvision's documented parameter counts,
the paper's FLOPs row (He et al., 2015, Table 1), and per-layer weights and MACs derived by hand below.

A conv layer with a k x k kernel, C_in inputs and C_out filters has k*k*C_in*C_out weights and costs that many
multiply-accumulates (MACs) at each of its H_out x W_out output positions; BatchNorm adds 2*C parameters
(scale and shift) and no MACs.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from course import counting, models
from course.__main__ import main as cli
from course.lessons import resnet_bottleneck as lesson
from course.models import resnet

# torchvision.models documentation (ResNet*_Weights.IMAGENET1K_V1: "num_params"): BatchNorm scale and shift
# included, running statistics not.
TORCHVISION_PARAMS = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}
# torchvision's documented "GFLOPS" (multiply-adds) of its v1.5 models (stride in the 3x3).
TORCHVISION_GMACS = {18: 1.81, 34: 3.66, 50: 4.09, 101: 7.80, 152: 11.51}
# He et al. (2015), Table 1, last row: "FLOPs" (multiply-adds) x 10^9, of the paper's v1 models.
PAPER_GMACS = {18: 1.8, 34: 3.6, 50: 3.8, 101: 7.6, 152: 11.3}


@functools.lru_cache(maxsize=None)
def table(name: str, shape: tuple[int, int, int] | None = None) -> counting.CountTable:
    shape = shape or models.get_spec(name).input_shape
    return counting.count(models.build(name, input_shape=shape, abstract=True), shape, name)


def block_table(block_cls, in_shape, channels, stride=1, **kw) -> counting.CountTable:
    blk = nnx.eval_shape(lambda: block_cls(in_shape[-1], channels, stride, rngs=nnx.Rngs(0), **kw))
    return counting.count(blk, in_shape, block_cls.__name__)


def rows(t: counting.CountTable) -> dict[str, counting.LayerCount]:
    return {r.path: r for r in t.rows}


# ----------------------------------------------------------------------------------------------------------
# Whole networks
@pytest.mark.parametrize("depth", sorted(TORCHVISION_PARAMS))
def test_parameter_counts_equal_torchvision(depth):
    assert table(f"resnet{depth}").params_total == TORCHVISION_PARAMS[depth]
    if depth >= 50:  # moving the stride changes no weight
        assert table(f"resnet{depth}_v1").params_total == TORCHVISION_PARAMS[depth]


@pytest.mark.parametrize("depth", sorted(PAPER_GMACS))
def test_macs_reproduce_paper_and_torchvision(depth):
    v1 = table(f"resnet{depth}_v1" if depth >= 50 else f"resnet{depth}").macs / 1e9
    v15 = table(f"resnet{depth}").macs / 1e9
    # The paper prints two significant figures (3.66 appears as 3.6, 7.57 as 7.6): within 2 %.
    assert v1 == pytest.approx(PAPER_GMACS[depth], rel=0.02)
    assert round(v15, 2) == TORCHVISION_GMACS[depth]


def test_v1_v15_difference_derived_by_hand():
    # The first block of conv3_x: input 56x56x256, width 128. v1 runs its first 1x1 (256 -> 128) with stride 2,
    # on the 28x28 output grid; v1.5 runs it on all 56x56 positions and strides in the 3x3 instead, whose
    # output grid is 28x28 either way. Everything else is identical.
    per_block = (56 * 56 - 28 * 28) * 256 * 128  # = 77,070,336
    # conv4_x (28x28x512 -> width 256) and conv5_x (14x14x1024 -> width 512) cost the same difference:
    # (28*28 - 14*14) * 512 * 256 = (14*14 - 7*7) * 1024 * 512 = 77,070,336
    for depth in (50, 101, 152):
        assert table(f"resnet{depth}").macs - table(f"resnet{depth}_v1").macs == 3 * per_block

    v1 = rows(block_table(resnet.BottleneckBlock, (56, 56, 256), 128, 2, stride_in_1x1=True))
    v15 = rows(block_table(resnet.BottleneckBlock, (56, 56, 256), 128, 2))
    assert v1["conv1"].stride == (2, 2) and v1["conv2"].stride == (1, 1)
    assert v15["conv1"].stride == (1, 1) and v15["conv2"].stride == (2, 2)
    assert v1["conv1"].out_shape == (28, 28, 128) and v15["conv1"].out_shape == (56, 56, 128)
    assert v1["conv1"].macs == 28 * 28 * 256 * 128 == 25_690_112
    assert v15["conv1"].macs == 56 * 56 * 256 * 128 == 102_760_448
    for path in ("conv2", "conv3", "shortcut/conv"):
        assert v1[path].macs == v15[path].macs
    assert v15["conv2"].macs == 28 * 28 * (3 * 3 * 128) * 128 == 115_605_504
    # the projection shortcut (option B): 1x1, 256 -> 512, stride 2, plus BatchNorm
    assert v15["shortcut/conv"].params == 256 * 512 and v15["shortcut/bn"].params == 2 * 512
    assert v15["shortcut/conv"].macs == 28 * 28 * 256 * 512


def test_output_shape_of_every_stage():
    def out(n, k, s, p):  # floor((n + 2p - k) / s) + 1
        return (n + 2 * p - k) // s + 1

    c1 = out(224, 7, 2, 3)  # conv1: 7x7, stride 2, pad 3
    pool = out(c1, 3, 2, 1)  # 3x3 max pool, stride 2, pad 1
    assert (c1, pool) == (112, 56)
    expected50 = {"conv1": (c1, c1, 64), "max_pool": (pool, pool, 64), "conv2_x": (56, 56, 256),
                  "conv3_x": (28, 28, 512), "conv4_x": (14, 14, 1024), "conv5_x": (7, 7, 2048),
                  "avg_pool": (2048,), "fc": (1000,)}
    for name in ("resnet50", "resnet50_v1"):
        assert lesson.shape_trace(models.build(name, abstract=True)) == expected50
    trace18 = lesson.shape_trace(models.build("resnet18", abstract=True))
    assert [trace18[s] for s in resnet.STAGE_NAMES] == [(56, 56, 64), (28, 28, 128), (14, 14, 256), (7, 7, 512)]
    trace20 = lesson.shape_trace(models.build("resnet20", abstract=True))  # Sec. 4.2 on 16x16 digits
    assert [trace20[s] for s in resnet.STAGE_NAMES[:3]] == [(16, 16, 16), (8, 8, 32), (4, 4, 64)]


def test_table1_rows_read_from_the_model():
    m = models.build("resnet50_v1", abstract=True)
    t = lesson.table1(m, table("resnet50_v1"))
    what = {r["layer"]: r["what"] for r in t if "pool" not in r["what"]}
    assert what["conv1"] == "7x7, 64, stride 2, pad 3"
    assert what["conv2_x"] == "[1x1, 64; 3x3, 64; 1x1, 256] x 3"
    assert what["conv4_x"] == "[1x1, 256; 3x3, 256; 1x1, 1024] x 6"
    assert sum(r["params"] for r in t) == TORCHVISION_PARAMS[50]
    fc = t[-1]
    assert fc["params"] == 2048 * 1000 + 1000 and fc["macs"] == 2048 * 1000


# ----------------------------------------------------------------------------------------------------------
# Blocks, by hand
def test_bottleneck_block_on_56x56x256():
    t = block_table(resnet.BottleneckBlock, (56, 56, 256), 64)
    r = rows(t)
    positions = 56 * 56  # every layer keeps the 56x56 grid: stride 1, 1x1 pad 0, 3x3 pad 1
    assert r["conv1"].kernel == (1, 1) and r["conv1"].padding == ((0, 0), (0, 0))
    assert r["conv2"].kernel == (3, 3) and r["conv2"].padding == ((1, 1), (1, 1))
    assert [r[c].out_shape for c in ("conv1", "conv2", "conv3")] == [(56, 56, 64), (56, 56, 64), (56, 56, 256)]
    assert r["conv1"].params == 1 * 1 * 256 * 64 == 16_384
    assert r["conv2"].params == 3 * 3 * 64 * 64 == 36_864
    assert r["conv3"].params == 1 * 1 * 64 * 256 == 16_384
    weights = 16_384 + 36_864 + 16_384  # = 69,632
    bn = 2 * 64 + 2 * 64 + 2 * 256
    assert t.params_total == weights + bn == 70_400
    assert r["conv1"].macs == positions * 16_384 == 51_380_224
    assert r["conv2"].macs == positions * 36_864 == 115_605_504
    assert t.macs == positions * weights == 218_365_952
    assert "shortcut/conv" not in r  # identity shortcut: no weights


def test_basic_blocks_at_64_and_256_channels():
    t64 = block_table(resnet.BasicBlock, (56, 56, 64), 64)
    assert t64.params_total == 2 * (3 * 3 * 64 * 64) + 2 * (2 * 64) == 73_984
    assert t64.macs == 56 * 56 * 2 * (3 * 3 * 64 * 64) == 231_211_008
    t256 = block_table(resnet.BasicBlock, (56, 56, 256), 256)  # "two 3x3 convs at 256-d"
    assert t256.params_total == 2 * (3 * 3 * 256 * 256) + 2 * (2 * 256) == 1_180_672
    assert t256.macs == 56 * 56 * 2 * (3 * 3 * 256 * 256) == 3_699_376_128
    bottleneck = block_table(resnet.BottleneckBlock, (56, 56, 256), 64)
    assert t256.macs / bottleneck.macs == pytest.approx(1_179_648 / 69_632)  # ~16.9x


# ----------------------------------------------------------------------------------------------------------
# The CIFAR networks of Sec. 4.2
@pytest.mark.parametrize("depth,paper_millions", [(20, 0.27), (56, 0.85), (110, 1.7)])
def test_cifar_resnets_match_table6(depth, paper_millions):
    n = (depth - 2) // 6
    t = table(f"resnet{depth}", (32, 32, 3))
    # conv1 3x3 3->16 + BN; stage i has 2n 3x3 convs, the first one from the previous width; BN after each
    widths, conv = [16, 32, 64], 3 * 3 * 3 * 16 + 2 * 16
    prev = 16
    for w in widths:
        conv += 3 * 3 * prev * w + (2 * n - 1) * 3 * 3 * w * w + 2 * n * 2 * w
        prev = w
    assert t.params_total == conv + 64 * 10 + 10  # option A shortcuts have no weights; fc with bias
    assert round(t.params_total / 1e6, 2 if depth < 100 else 1) == paper_millions
    weighted = [r for r in t.rows if r.kind != "BatchNorm"]
    assert len(weighted) == 6 * n + 2 == depth
    plain = table(f"plain{depth}", (32, 32, 3)) if depth <= 56 else None
    if plain is not None:
        assert plain.params_total == t.params_total and plain.macs == t.macs


def tiny(shortcut="zeropad", gated=False, seed=0):
    return resnet.cifar_resnet(8, 10, (8, 8, 1), widths=(4, 8, 16), shortcut=shortcut, gated=gated,
                               rngs=nnx.Rngs(seed))


@nnx.jit
def forward(m, x):  # compiled: running the tiny nets op by op is slower
    return m(x)


def test_plain_network_is_the_resnet_with_its_shortcuts_off():
    x = jax.random.uniform(jax.random.key(1), (4, 8, 8, 1))
    gated, plain, res = tiny(gated=True), tiny("none"), tiny()
    for m in (gated, plain, res):
        m.eval()
    np.testing.assert_allclose(forward(gated, x), forward(res, x), rtol=1e-5, atol=1e-6)
    resnet.set_shortcuts(gated, False)
    np.testing.assert_allclose(forward(gated, x), forward(plain, x), rtol=1e-5, atol=1e-6)
    assert not np.allclose(forward(plain, x), forward(res, x), atol=1e-3)
    assert nnx.graphdef(resnet.set_shortcuts(tiny(gated=True), False)) == nnx.graphdef(tiny(gated=True))
    with pytest.raises(ValueError, match="gated=True"):
        resnet.set_shortcuts(res, False)


def test_batchnorm_uses_running_averages_in_eval_mode():
    m = tiny()
    x = jax.random.uniform(jax.random.key(2), (8, 8, 8, 1)) * 3 + 1
    m.train()
    forward(m, x)  # updates every BatchNorm's running mean and variance
    assert float(jnp.abs(m.bn1.mean[...]).max()) > 0
    assert m.bn1.use_running_average is False
    m.eval()
    bns = [bn for _, bn in nnx.iter_modules(m) if isinstance(bn, nnx.BatchNorm)]
    assert len(bns) == 7 and all(bn.use_running_average for bn in bns)
    # eval mode: an example's output does not depend on the rest of the batch
    other = x.at[1:].set(jax.random.uniform(jax.random.key(3), (7, 8, 8, 1)))  # same first example
    np.testing.assert_allclose(forward(m, other)[0], forward(m, x)[0], rtol=1e-5, atol=1e-6)
    m.train()  # train mode: it does (batch statistics)
    assert not np.allclose(forward(m, other)[0], forward(m, x)[0], atol=1e-3)


# ----------------------------------------------------------------------------------------------------------
# Bad input
def test_wrong_input_size_is_a_clear_error():
    m = models.build("resnet50", abstract=True)
    m.eval()
    with pytest.raises(ValueError, match=r"expects inputs of shape \(batch, 224, 224, 3\).*100x100x3"):
        nnx.eval_shape(lambda m, x: m(x), m, jax.ShapeDtypeStruct((1, 100, 100, 3), jnp.float32))
    with pytest.raises(ValueError, match="add a batch axis"):
        nnx.eval_shape(lambda m, x: m(x), m, jax.ShapeDtypeStruct((224, 224, 3), jnp.float32))
    with pytest.raises(ValueError, match="multiples of 32"):
        models.build("resnet50", input_shape=(100, 100, 3), abstract=True)
    with pytest.raises(ValueError, match="6n\\+2"):
        resnet.cifar_resnet(21, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="Table 1 defines"):
        resnet.imagenet_resnet(42, rngs=nnx.Rngs(0))


def test_command_line_counts_resnets(capsys):
    assert cli(["count", "resnet20"]) == 0
    out = capsys.readouterr().out
    assert "conv4_x/2/conv2" in out and f"{table('resnet20').params_total:,} parameters" in out
    assert cli(["count", "resnet50", "--size", "100"]) == 2
    assert "multiples of 32" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# Notebook 04's lesson helpers (course/lessons/resnet_bottleneck.py)
from course import training  # noqa: E402
from course.lessons.resnet_bottleneck import plot_block  # noqa: E402


def leaves(m, *filters):
    return [np.asarray(v) for v in jax.tree.leaves(nnx.state(m, *filters))]


def test_twins_start_identical_and_compute_plain_and_residual():
    plain, res = lesson.twins(8, 3, (8, 8, 1), (4, 8, 16))
    assert all(np.array_equal(a, b) for a, b in zip(leaves(plain, nnx.Param, nnx.BatchStat),
                                                    leaves(res, nnx.Param, nnx.BatchStat)))
    x = jax.random.uniform(jax.random.key(4), (4, 8, 8, 1))
    for m in (plain, res):
        m.eval()
    # references built independently: the plain network (no shortcuts at all) and the ResNet, from the same seed
    ref_plain, ref_res = tiny("none", seed=3), tiny(seed=3)
    for m in (ref_plain, ref_res):
        m.eval()
    np.testing.assert_allclose(forward(plain, x), forward(ref_plain, x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(forward(res, x), forward(ref_res, x), rtol=1e-5, atol=1e-6)


def test_first_step_gradients_equal_autodiff_and_leave_the_model_alone():
    import optax

    rng = np.random.default_rng(0)
    x = rng.uniform(size=(16, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 10, 16).astype(np.int32)
    tx = optax.sgd(0.05, momentum=0.9)
    for m in lesson.twins(8, 0, (8, 8, 1), (4, 8, 16)):
        before = leaves(m, nnx.Param, nnx.BatchStat)
        got = lesson.first_step_grad_norms(m, x, y, tx, 0.05)
        assert all(np.array_equal(a, b) for a, b in zip(before, leaves(m, nnx.Param, nnx.BatchStat)))
        ref = training.layer_grad_norms(nnx.clone(m), x, y)  # jax.grad, directly
        assert list(got) == [k for k in ref if k != "fc"]  # every conv kernel, in model order
        np.testing.assert_allclose([got[k] for k in got], [ref[k] for k in got], rtol=1e-4)
        assert len(lesson.main_path(got)) == 7  # conv1 + 3 stages x 1 block x 2 convs
    with pytest.raises(ValueError, match="one label each"):
        lesson.first_step_grad_norms(m, x, y[:3], tx, 0.05)


def test_degradation_runs_and_their_figures():
    import optax

    from course.data import Dataset

    rng = np.random.default_rng(1)
    d = Dataset("noise", rng.uniform(size=(64, 8, 8, 1)).astype(np.float32), rng.integers(0, 10, 64).astype(np.int32),
                rng.uniform(size=(16, 8, 8, 1)).astype(np.float32), rng.integers(0, 10, 16).astype(np.int32),
                tuple("0123456789"))
    runs, grads = lesson.degradation_runs(d, (8,), [0, 1], widths=(4, 8, 16), epochs=2, batch=32,
                                          tx=optax.sgd(0.05, momentum=0.9), lr=0.05)
    assert list(runs) == ["plain-8", "ResNet-8"] and all(len(h) == 2 for h in runs.values())
    assert all(h.epoch == [1, 2] and len(h.test_accuracy) == 2 for hs in runs.values() for h in hs)
    assert all(g.shape == (7,) and (g > 0).all() for gs in grads.values() for g in gs)
    assert {k: len(v.values) for k, v in lesson.final(runs, "train_accuracy").items()} == {"plain-8": 2, "ResNet-8": 2}
    fig = lesson.plot_degradation(runs)
    for ax in fig.axes:  # epochs are whole numbers on the axis
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)
    assert len(lesson.plot_grad_profiles(grads).axes) == 1


def test_activation_memory_by_hand():
    t = block_table(resnet.BottleneckBlock, (56, 56, 256), 64)
    rows_ = lesson.activation_memory(t)
    assert [r["output"] for r in rows_] == ["56x56x64"] * 4 + ["56x56x256"] * 2  # conv1, bn1, conv2, bn2, conv3, bn3
    assert sum(r["bytes"] for r in rows_) == 4 * 2 * 56 * 56 * (64 + 64 + 256)
    assert sum(r["params"] for r in rows_) == t.params_total


def test_costs_drawn_on_separate_axes():
    tabs = {"bottleneck": block_table(resnet.BottleneckBlock, (56, 56, 256), 64),
            "basic": block_table(resnet.BasicBlock, (56, 56, 64), 64)}
    fig = lesson.plot_block_costs(tabs)
    assert [ax.get_ylabel() for ax in fig.axes] == ["parameters (thousand)", "MACs per example (million)"]


def test_shortcut_line_does_not_cross_the_projection_box():
    from matplotlib.patches import FancyBboxPatch

    fig = plot_block(block_table(resnet.BottleneckBlock, (56, 56, 256), 128, 2, stride_in_1x1=True))
    ax = fig.axes[0]
    fig.canvas.draw()
    box = next(p for p in ax.patches if isinstance(p, FancyBboxPatch) and p.get_facecolor()[:3] ==
               pytest.approx((0xd8 / 255, 0xf0 / 255, 0xd8 / 255)))
    ext = box.get_extents().transformed(ax.transData.inverted())  # the drawn box, its padding included
    for line in ax.lines:
        xs, ys = line.get_data()
        for (x0, y0), (x1, y1) in zip(zip(xs, ys), list(zip(xs, ys))[1:]):
            if x0 == x1 and ext.x0 < x0 < ext.x1:  # a vertical segment through the box's column
                assert max(y0, y1) <= ext.y0 + 1e-6 or min(y0, y1) >= ext.y1 - 1e-6, (y0, y1, ext)


def _texts(fig):
    from matplotlib.text import Text

    fig.canvas.draw()
    return [t for t in fig.findobj(Text) if t.get_text().strip() and t.get_visible()]


def test_degradation_runs_measure_training_accuracy_as_test_accuracy_is():
    """train_eval=N: every run also records the eval-mode accuracy of N training examples after each epoch, and the
    figure draws it in its own panel, titled apart from the running train-mode mean; with N >= the training set,
    it is the accuracy ``training.evaluate`` measures on the whole training split."""
    import optax

    from course.data import Dataset

    rng = np.random.default_rng(2)
    d = Dataset("noise", rng.uniform(size=(64, 8, 8, 1)).astype(np.float32), rng.integers(0, 10, 64).astype(np.int32),
                rng.uniform(size=(16, 8, 8, 1)).astype(np.float32), rng.integers(0, 10, 16).astype(np.int32),
                tuple("0123456789"))
    tx = optax.sgd(0.05, momentum=0.9)
    runs, _ = lesson.degradation_runs(d, (8,), [0, 1], widths=(4, 8, 16), epochs=2, batch=32, tx=tx, lr=0.05,
                                      train_eval=100)
    for hs in runs.values():
        for h in hs:
            assert len(h.train_eval_accuracy) == len(h.train_accuracy) == 2
            assert all(k / 64 == a for a in h.train_eval_accuracy for k in [round(a * 64)])  # all 64 examples
    # the same run by hand: the ResNet twin of seed 1, trained as degradation_runs trains it, then evaluated
    net = lesson.twins(8, 1, d.input_shape, (4, 8, 16))[1]
    pick = np.random.default_rng(1).choice(64, 32, replace=False)
    lesson.first_step_grad_norms(net, d.x_train[pick], d.y_train[pick], tx, 0.05, seed=1)  # touches a clone only
    training.fit(net, d, epochs=2, batch_size=32, tx=tx, seed=1, verbose=False)
    assert runs["ResNet-8"][1].train_eval_accuracy[-1] == pytest.approx(
        training.evaluate(net, d.x_train, d.y_train)["accuracy"])
    fig = lesson.plot_degradation(runs)
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 3 and "running" in titles[0] and "train mode" in titles[0]
    assert all("eval mode" in t for t in titles[1:])
    import dataclasses

    without = {k: [dataclasses.replace(h, train_eval_accuracy=[]) for h in hs] for k, hs in runs.items()}
    assert len(lesson.plot_degradation(without).axes) == 2  # no train_eval recorded: its panel is left out


def test_figures_tell_plain_from_resnet_at_projector_size():
    """Every label at least 9 pt; the legends' line samples long enough to show the dashes of the plain networks,
    and a legend title that says which style is which (GUIDE: figures for a projector)."""
    rng = np.random.default_rng(0)
    grads = {f"{k}-{d}": [rng.uniform(0.5, 2, 7) for _ in range(3)] for d in (20, 56) for k in ("plain", "ResNet")}
    fig = lesson.plot_grad_profiles(grads)
    assert min(t.get_fontsize() for t in _texts(fig)) >= 9
    leg = fig.axes[0].get_legend()
    assert leg.handlelength >= 3 and "dashed" in leg.get_title().get_text()
    styles = {t.get_text(): h.get_linestyle() for t, h in zip(leg.get_texts(), leg.legend_handles)}
    assert styles["plain-20"] != styles["ResNet-20"] and styles["plain-56"] == styles["plain-20"]
    for f in (plot_block(block_table(resnet.BottleneckBlock, (56, 56, 256), 64)),
              lesson.plot_block_costs({"b": block_table(resnet.BasicBlock, (56, 56, 64), 64)})):
        assert min(t.get_fontsize() for t in _texts(f)) >= 9
