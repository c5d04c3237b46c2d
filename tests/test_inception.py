"""GoogLeNet (course/models/inception.py) against numbers derived by hand from the paper and from torchvision.

Every expected count below is arithmetic written out here from the filter counts of the paper's Table 1
(Szegedy et al. 2014), not read back from the code. Counting runs on abstract models (nothing is computed).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from course import counting, models, training
from course.models.inception import (AuxHead, AuxSpec, ConvSpec, GoogLeNet, Inception, InceptionRow, NaiveInception,
                                     googlenet_loss, local_response_norm)

# Table 1, typed in again: name, input channels, input height = width, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5,
# pool proj, and the output depth of Table 1's "output size" column.
TABLE1 = [
    ("3a", 192, 28, 64, 96, 128, 16, 32, 32, 256),
    ("3b", 256, 28, 128, 128, 192, 32, 96, 64, 480),
    ("4a", 480, 14, 192, 96, 208, 16, 48, 64, 512),
    ("4b", 512, 14, 160, 112, 224, 24, 64, 64, 512),
    ("4c", 512, 14, 128, 128, 256, 24, 64, 64, 512),
    ("4d", 512, 14, 112, 144, 288, 32, 64, 64, 528),
    ("4e", 528, 14, 256, 160, 320, 32, 128, 128, 832),
    ("5a", 832, 7, 256, 160, 320, 32, 128, 128, 832),
    ("5b", 832, 7, 384, 192, 384, 48, 128, 128, 1024),
]
# Parameters of each row (weights + biases), summed by hand branch by branch, e.g. 3a:
# 192*64+64 + 192*96+96 + 9*96*128+128 + 192*16+16 + 25*16*32+32 + 192*32+32
#   = 12,352 + 18,528 + 110,720 + 3,088 + 12,832 + 6,176 = 163,696
ROW_PARAMS = {"3a": 163_696, "3b": 388_736, "4a": 376_176, "4b": 449_160, "4c": 510_104, "4d": 605_376,
              "4e": 868_352, "5a": 1_043_456, "5b": 1_444_080}


def by_hand(cin, n1, r3, n3, r5, n5, pp, k5=5, bias=True):
    """Weights of the six convolutions of an Inception module, plus one bias per output channel."""
    weights = cin * n1 + cin * r3 + 3 * 3 * r3 * n3 + cin * r5 + k5 * k5 * r5 * n5 + cin * pp
    return weights + (n1 + r3 + n3 + r5 + n5 + pp if bias else 0)


@pytest.fixture(scope="module")
def paper():
    return models.build("googlenet", abstract=True)


@pytest.fixture(scope="module")
def paper_eval(paper):
    return counting.count(paper, (224, 224, 3), mode="eval")


@pytest.fixture(scope="module")
def paper_train(paper):
    return counting.count(paper, (224, 224, 3), mode="train")


@pytest.mark.parametrize("row", TABLE1, ids=[r[0] for r in TABLE1])
def test_inception_row_shape_and_params(row):
    name, cin, hw, n1, r3, n3, r5, n5, pp, depth = row
    block = nnx.eval_shape(lambda: Inception(cin, n1, r3, n3, r5, n5, pp, rngs=nnx.Rngs(0)))
    out = nnx.eval_shape(lambda m, x: m(x), block, jax.ShapeDtypeStruct((2, hw, hw, cin), jnp.float32))
    assert out.shape == (2, hw, hw, depth)
    table = counting.count(block, (hw, hw, cin))
    assert table.params == table.params_total == ROW_PARAMS[name] == by_hand(cin, n1, r3, n3, r5, n5, pp)
    # MACs = H * W * (weights), e.g. 3a: 28 * 28 * 163,328 = 128,049,152, Table 1's "128M"
    assert table.macs == hw * hw * by_hand(cin, n1, r3, n3, r5, n5, pp, bias=False)


def test_3a_macs_match_table1_ops():
    # 28 * 28 * (192*64 + 192*96 + 9*96*128 + 192*16 + 25*16*32 + 192*32) = 128,049,152: Table 1's "128M"
    block = nnx.eval_shape(lambda: Inception(192, 64, 96, 128, 16, 32, 32, rngs=nnx.Rngs(0)))
    assert counting.count(block, (28, 28, 192)).macs == 128_049_152


def test_googlenet_rows_are_table1(paper, paper_eval):
    groups = {g["path"]: g for g in paper_eval.group(1)}
    for name, *_ in TABLE1:
        assert groups[f"inception{name}"]["params"] == ROW_PARAMS[name]
    # stem: 7x7x3x64 + 64 ; 1x1 64->64 ; 3x3 64->192 ; classifier 1024 -> 1000
    assert groups["conv1"]["params"] == 7 * 7 * 3 * 64 + 64 == 9_472
    assert groups["conv1"]["macs"] == 112 * 112 * 64 * 7 * 7 * 3
    assert groups["conv2_reduce"]["params"] == 64 * 64 + 64
    assert groups["conv2"]["params"] == 9 * 64 * 192 + 192
    assert groups["fc"]["params"] == 1024 * 1000 + 1000
    stem = 9_472 + 4_160 + 110_784
    assert paper_eval.params == stem + sum(ROW_PARAMS.values()) + 1_025_000 == 6_998_552


def test_aux_head_params_by_hand():
    # Sec. 5: 5x5/3 avg pool (14 -> 4), 1x1 conv 128, FC 1024 on 4*4*128 = 2048 inputs, linear to 1000 classes
    aux1 = (512 * 128 + 128) + (2048 * 1024 + 1024) + (1024 * 1000 + 1000)  # = 3,188,840
    aux2 = (528 * 128 + 128) + (2048 * 1024 + 1024) + (1024 * 1000 + 1000)  # = 3,190,888
    for cin, expected in ((512, aux1), (528, aux2)):
        head = nnx.eval_shape(lambda: AuxHead(cin, 1000, 14, rngs=nnx.Rngs(0)))
        assert counting.param_count(head) == expected
        out = nnx.eval_shape(lambda m, x: m(x), head, jax.ShapeDtypeStruct((3, 14, 14, cin), jnp.float32))
        assert out.shape == (3, 1000)


def test_aux_heads_only_in_train_mode(paper_eval, paper_train):
    assert not any(r.path.startswith("aux") for r in paper_eval.rows)
    assert {r.path.split("/")[0] for r in paper_train.rows if r.path.startswith("aux")} == {"aux1", "aux2"}
    assert paper_eval.params_total == paper_train.params == 6_998_552 + 3_188_840 + 3_190_888
    # aux MACs: 4*4*128*C_in (conv) + 2048*1024 + 1024*1000, for C_in = 512 and 528
    aux_macs = (16 * 128 * 512 + 2048 * 1024 + 1024 * 1000) + (16 * 128 * 528 + 2048 * 1024 + 1024 * 1000)
    assert paper_train.macs - paper_eval.macs == aux_macs  # = 8,372,224


def test_torchvision_variant_reproduces_torchvision_count():
    model = models.build("googlenet_torchvision", abstract=True)
    eval_t = counting.count(model, (224, 224, 3), mode="eval")
    assert eval_t.params == 6_624_904  # torchvision.models.googlenet(aux_logits=False): documented count
    assert eval_t.params_total == 13_004_888  # torchvision's googlenet with its two aux heads
    # its "5x5" branch really has 3x3 kernels (torchvision issue #906), and no conv has a bias
    assert model.inception3a.conv5x5.conv.kernel.shape == (3, 3, 16, 32)
    assert model.inception3a.conv1x1.conv.bias is None
    # torchvision documents 1.50 GFLOPS (= GMACs) for googlenet
    assert abs(eval_t.macs / 1e9 - 1.50) < 0.005


PAPER_MACS = (112 * 112 * 64 * 7 * 7 * 3          # conv1 7x7/2
              + 56 * 56 * 64 * 64                # conv2 reduce 1x1
              + 56 * 56 * 192 * 3 * 3 * 64       # conv2 3x3
              + sum(hw * hw * by_hand(cin, *f[:6], bias=False) for _, cin, hw, *f in TABLE1)
              + 1024 * 1000)                     # linear


def test_paper_macs_near_one_and_a_half_billion(paper_eval):
    # PAPER_MACS = 1,582,671,872 (written out above): Sec. 1's design budget of "1.5 billion multiply-adds"
    assert paper_eval.macs == PAPER_MACS


def test_naive_inception_grows_channels():
    block = nnx.eval_shape(lambda: NaiveInception(192, 64, 128, 32, rngs=nnx.Rngs(0)))
    out = nnx.eval_shape(lambda m, x: m(x), block, jax.ShapeDtypeStruct((1, 28, 28, 192), jnp.float32))
    assert out.shape == (1, 28, 28, 64 + 128 + 32 + 192)
    t = counting.count(block, (28, 28, 192))
    assert t.params == (192 * 64 + 64) + (9 * 192 * 128 + 128) + (25 * 192 * 32 + 32)


# ----------------------------------------------------------------------------------------------------------
def _maxpool3x3_numpy(x):
    """3x3/1 max pool with -inf padding, written with numpy loops (an independent reference)."""
    b, h, w, c = x.shape
    p = np.full((b, h + 2, w + 2, c), -np.inf, x.dtype)
    p[:, 1:-1, 1:-1] = x
    return np.max([p[:, i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=0)


@pytest.fixture(scope="module")
def small_block():
    return Inception(6, 3, 2, 4, 2, 3, 5, rngs=nnx.Rngs(1))


def test_pool_branch_consumes_pooled_tensor(small_block):
    x = np.asarray(jax.random.normal(jax.random.key(0), (2, 5, 5, 6)), np.float32)
    y = np.asarray(small_block(jnp.asarray(x)))
    assert y.shape == (2, 5, 5, 3 + 4 + 3 + 5)
    w = np.asarray(small_block.pool_proj.conv.kernel[0, 0])  # (6, 5)
    b = np.asarray(small_block.pool_proj.conv.bias[...])
    expected = np.maximum(_maxpool3x3_numpy(x) @ w + b, 0)
    np.testing.assert_allclose(y[..., -5:], expected, rtol=1e-5, atol=1e-5)
    unpooled = np.maximum(x @ w + b, 0)  # what a module that ignored the pool would output
    assert np.abs(y[..., -5:] - unpooled).max() > 1e-2


def test_changing_pool_branch_changes_only_its_channels(small_block):
    x = jax.random.normal(jax.random.key(1), (2, 5, 5, 6))
    before = np.asarray(small_block(x))
    block = nnx.clone(small_block)
    block.pool_proj.conv.kernel[...] = 2.0 * block.pool_proj.conv.kernel[...]
    after = np.asarray(block(x))
    np.testing.assert_array_equal(after[..., :-5], before[..., :-5])
    assert np.abs(after[..., -5:] - before[..., -5:]).max() > 1e-3


def test_inception_rejects_wrong_channels(small_block):
    with pytest.raises(ValueError, match="expects"):
        small_block(jnp.zeros((1, 5, 5, 7)))


# ----------------------------------------------------------------------------------------------------------
# A tiny GoogLeNet (one stem conv, rows named 4a and 4d so the heads attach) keeps compiles short.
TINY_LAYOUT = (ConvSpec("conv1", 4, 3), InceptionRow("4a", 2, 2, 2, 2, 2, 2), InceptionRow("4d", 2, 2, 2, 2, 2, 2))
TINY_AUX = AuxSpec(pool=2, stride=2, conv_ch=2, fc=4)


@pytest.fixture()
def tiny():
    return GoogLeNet(3, (4, 4, 1), TINY_LAYOUT, TINY_AUX, rngs=nnx.Rngs(0))


def test_loss_is_main_plus_weighted_aux(tiny):
    x = jax.random.normal(jax.random.key(2), (5, 4, 4, 1))
    y = jnp.array([0, 1, 2, 0, 1])
    tiny.eval()  # dropout off; the heads are skipped in eval mode...
    loss_eval, _ = googlenet_loss(tiny, x, y, 1.0)
    main = optax.softmax_cross_entropy_with_integer_labels(tiny(x), y).mean()
    np.testing.assert_allclose(loss_eval, main, rtol=1e-6)
    # ...so to check the combination, put only the heads' switch in train mode (dropout stays off)
    tiny.deterministic = False
    _, out = tiny.intermediates(x)
    aux = [optax.softmax_cross_entropy_with_integer_labels(out[k], y).mean() for k in ("aux1", "aux2")]
    for w in (0.0, 0.3, 1.0):
        loss, _ = googlenet_loss(tiny, x, y, jnp.float32(w))
        np.testing.assert_allclose(loss, main + w * (aux[0] + aux[1]), rtol=1e-5)


def test_aux_weight_does_not_recompile(tiny):
    traces = []

    def counting_loss(model, x, y, w):
        traces.append(1)  # runs only while tracing
        return googlenet_loss(model, x, y, w)

    opt = training.make_optimizer(tiny, 1e-3)
    x, y = jnp.zeros((2, 4, 4, 1)), jnp.array([0, 1])
    tiny.train()
    for w in (0.0, 0.3, 1.0):
        training.train_step(tiny, opt, x, y, counting_loss, jnp.float32(w))
    assert len(traces) == 1


def test_heads_discarded_at_inference(tiny):
    x = jax.random.normal(jax.random.key(3), (4, 4, 4, 1))
    tiny.eval()
    headless = nnx.clone(tiny)
    headless.aux1 = headless.aux2 = None
    np.testing.assert_array_equal(np.asarray(tiny(x)), np.asarray(headless(x)))
    assert set(tiny.aux_heads()) == {"4a", "4d"} and headless.aux_heads() == {}
    t_eval = counting.count(tiny, (4, 4, 1), mode="eval")
    t_train = counting.count(tiny, (4, 4, 1), mode="train")
    assert t_eval.macs < t_train.macs
    assert counting.count(headless, (4, 4, 1), mode="train").macs == t_eval.macs


def test_wrong_input_shape_is_a_clear_error(tiny):
    with pytest.raises(ValueError, match="built for 4x4x1"):
        tiny(jnp.zeros((1, 8, 8, 1)))
    with pytest.raises(ValueError, match="average pool"):
        models.build("googlenet", input_shape=(64, 64, 3), abstract=True)


def test_mini_is_registered_and_small():
    spec = models.get_spec("googlenet_mini")
    model = models.build("googlenet_mini", abstract=True)
    t_eval = counting.count(model, spec.input_shape, mode="eval")
    t_train = counting.count(model, spec.input_shape, mode="train")
    assert t_eval.params < 120_000 and t_train.params == t_train.params_total > t_eval.params
    assert [r.path for r in t_train.rows if r.path.endswith("classifier")] == ["aux1/classifier", "aux2/classifier"]


def test_registry_trains_googlenets_with_their_heads():
    """The loss generic code (course.bench, the train command) takes from the registry adds 0.3 x each head's
    cross-entropy to the main one, recomputed here from the model's own outputs; plain models have none."""
    spec = models.get_spec("googlenet_mini")
    model = models.build("googlenet_mini", seed=0)
    model.train()
    twin = nnx.clone(model)  # the same parameters and the same dropout rng state: the same masks below
    x = np.random.default_rng(0).normal(size=(4, 16, 16, 1)).astype(np.float32)  # (B, H, W, C)
    y = jnp.arange(4) % 10
    logits, out = twin.intermediates(x)
    ce = lambda z: float(optax.softmax_cross_entropy_with_integer_labels(z, y).mean())  # noqa: E731
    loss, main = spec.loss(model, x, y, None)
    np.testing.assert_allclose(np.asarray(main), np.asarray(logits), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(loss), ce(logits) + 0.3 * (ce(out["aux1"]) + ce(out["aux2"])), rtol=1e-5)
    assert all(models.get_spec(n).loss is spec.loss for n in ("googlenet", "googlenet_torchvision"))
    assert models.get_spec("small_cnn").loss is None and models.get_spec("resnet50").loss is None


def test_cli_counts_googlenet(capsys):
    from course.__main__ import main

    assert main(["count", "googlenet", "--mode", "train"]) == 0
    out = capsys.readouterr().out
    assert "aux1/fc" in out and "13,378,280" in out
    assert main(["count", "googlenet"]) == 0
    out = capsys.readouterr().out
    assert "aux1" not in out and f"{PAPER_MACS:,}" in out


def test_loss_counts_every_head_not_only_two():
    # a third head (after 4a, 4b and 4d): its loss must be part of the training loss, not silently dropped
    layout = TINY_LAYOUT[:2] + (InceptionRow("4b", 2, 2, 2, 2, 2, 2),) + TINY_LAYOUT[2:]
    three = GoogLeNet(3, (4, 4, 1), layout, AuxSpec(after=("4a", "4b", "4d"), pool=2, stride=2, conv_ch=2, fc=4),
                      rngs=nnx.Rngs(0))
    x, y = jax.random.normal(jax.random.key(4), (5, 4, 4, 1)), jnp.array([0, 1, 2, 0, 1])
    three.eval()
    three.deterministic = False  # heads on, dropout off
    logits, out = three.intermediates(x)
    assert {"aux1", "aux2", "aux3"} <= set(out)
    ce = lambda z: optax.softmax_cross_entropy_with_integer_labels(z, y).mean()  # noqa: E731
    expected = ce(logits) + 0.3 * (ce(out["aux1"]) + ce(out["aux2"]) + ce(out["aux3"]))
    np.testing.assert_allclose(googlenet_loss(three, x, y, 0.3)[0], expected, rtol=1e-5)


def test_heads_on_a_non_square_input():
    # 4x6 input: the heads' 2x2/2 pools give 2x3 maps, so their FC layers read 2*3*conv_ch values
    net = GoogLeNet(3, (4, 6, 1), TINY_LAYOUT, TINY_AUX, rngs=nnx.Rngs(0))
    assert net.aux1.fc.in_features == 2 * 3 * TINY_AUX.conv_ch
    net.eval()
    net.deterministic = False
    logits, out = net.intermediates(jnp.zeros((2, 4, 6, 1)))
    assert logits.shape == out["aux1"].shape == out["aux2"].shape == (2, 3)
    with pytest.raises(ValueError, match="at least 2x2, but it reads 1x6"):
        GoogLeNet(3, (1, 6, 1), TINY_LAYOUT, TINY_AUX, rngs=nnx.Rngs(0))


def test_local_response_norm_matches_caffe_formula():
    """Caffe's ACROSS_CHANNELS LRN, b_c = a_c / (k + alpha/n * sum_{j=c-n/2}^{c+n/2} a_j^2)^beta, written as a
    loop over channels with the window clipped at the ends; the paper's stem uses it twice (Table 1 rows 2, 5)."""
    a = np.random.default_rng(0).normal(scale=30.0, size=(2, 3, 3, 7)).astype(np.float32)  # large: LRN bites
    n, alpha, beta, k = 5, 1e-4, 0.75, 1.0
    expected = np.empty_like(a)
    for c in range(a.shape[-1]):
        window = a[..., max(0, c - n // 2): c + n // 2 + 1]
        expected[..., c] = a[..., c] / (k + alpha / n * (window ** 2).sum(-1)) ** beta
    np.testing.assert_allclose(np.asarray(local_response_norm(jnp.asarray(a))), expected, rtol=1e-5)
    assert not np.allclose(expected, a, rtol=1e-2)  # the inputs are large enough that LRN changes them
