"""course.counting against counts derived by hand here, and against XLA's own cost analysis."""
import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from course import counting
from course.__main__ import main
from course.models.layers import PointwiseConv
from course.models.simple import MLP, SmallCNN


class One(nnx.Module):
    def __init__(self, layer):
        self.layer = layer

    def __call__(self, x):
        return self.layer(x)


def only_row(layer, shape):
    rows = counting.count(One(layer), shape).rows
    assert len(rows) == 1
    return rows[0]


def test_conv3x3_same_by_hand():
    r = only_row(nnx.Conv(3, 4, kernel_size=(3, 3), padding="SAME", rngs=nnx.Rngs(0)), (8, 8, 3))
    assert r.params == 3 * 3 * 3 * 4 + 4
    assert r.macs == 8 * 8 * 4 * (3 * 3 * 3)
    assert r.flops == 2 * r.macs
    # taps reading real pixels along one axis of 8: the two border outputs see 2 of 3 taps, the six inner ones 3
    taps = (2 + 6 * 3 + 2) ** 2
    assert r.xla_flops == 2 * taps * 3 * 4 + 8 * 8 * 4  # plus one add per bias
    assert r.padding == ((1, 1), (1, 1)) and r.out_shape == (8, 8, 4)


def test_strided_conv_by_hand():
    # 7 -> 4 outputs with stride 2 and SAME padding (1, 1): taps read inputs {-1,0,1} {1,2,3} {3,4,5} {5,6,7}
    r = only_row(nnx.Conv(2, 5, kernel_size=(3, 3), strides=2, padding="SAME", use_bias=False,
                          rngs=nnx.Rngs(0)), (7, 7, 2))
    assert r.out_shape == (4, 4, 5) and r.stride == (2, 2) and r.padding == ((1, 1), (1, 1))
    assert r.params == 3 * 3 * 2 * 5
    assert r.macs == 4 * 4 * 5 * 18
    assert r.xla_flops == 2 * (2 + 3 + 3 + 2) ** 2 * 2 * 5


def test_grouped_valid_conv_by_hand():
    r = only_row(nnx.Conv(8, 4, kernel_size=(3, 3), padding="VALID", feature_group_count=2,
                          rngs=nnx.Rngs(0)), (6, 6, 8))
    assert r.out_shape == (4, 4, 4) and r.groups == 2
    assert r.params == 3 * 3 * 4 * 4 + 4  # each output channel sees 8 / 2 input channels
    assert r.macs == 4 * 4 * 4 * 9 * 4
    assert r.xla_flops == 2 * r.macs + 4 * 4 * 4  # VALID: no tap falls in padding


def test_linear_batchnorm_and_pointwise_by_hand():
    r = only_row(nnx.Linear(256, 64, rngs=nnx.Rngs(0)), (256,))
    assert (r.params, r.macs, r.xla_flops) == (256 * 64 + 64, 256 * 64, 2 * 256 * 64 + 64)
    r = only_row(nnx.BatchNorm(16, rngs=nnx.Rngs(0)), (4, 4, 16))
    assert (r.params, r.macs, r.xla_flops) == (2 * 16, 0, None)
    r = only_row(PointwiseConv(192, 64, strides=2, rngs=nnx.Rngs(0)), (28, 28, 192))
    assert r.kind == "Conv1x1" and r.out_shape == (14, 14, 64)
    assert (r.params, r.macs) == (192 * 64 + 64, 14 * 14 * 64 * 192)


def test_small_cnn_table_by_hand():
    t = counting.count(SmallCNN(1, 10, rngs=nnx.Rngs(0)), (16, 16, 1))
    expected = [("conv1", 9 * 16 + 16, 16 * 16 * 16 * 9), ("conv2", 9 * 16 * 32 + 32, 8 * 8 * 32 * 9 * 16),
                ("conv3", 9 * 32 * 64 + 64, 4 * 4 * 64 * 9 * 32), ("head", 64 * 10 + 10, 64 * 10)]
    assert [(r.path, r.params, r.macs) for r in t.rows] == expected
    assert t.params == t.params_total == sum(e[1] for e in expected)
    assert t.macs == sum(e[2] for e in expected)
    assert "total" in str(t) and "<table>" in t._repr_html_()


def test_mlp_params_by_hand():
    t = counting.count(MLP(256, 10, hidden=(64,), rngs=nnx.Rngs(0)), (16, 16, 1))
    assert t.params == 256 * 64 + 64 + 64 * 10 + 10


@pytest.mark.parametrize("layer,shape", [
    (nnx.Conv(3, 8, kernel_size=(5, 5), padding="SAME", rngs=nnx.Rngs(0)), (9, 9, 3)),
    (nnx.Conv(4, 8, kernel_size=(7, 7), strides=2, padding=3, use_bias=False, rngs=nnx.Rngs(0)), (15, 15, 4)),
    (nnx.Conv(4, 4, kernel_size=(3, 3), padding="SAME", kernel_dilation=2, rngs=nnx.Rngs(0)), (8, 8, 4)),
    (nnx.Conv(6, 6, kernel_size=(3, 3), padding="SAME", feature_group_count=3, rngs=nnx.Rngs(0)), (8, 8, 6)),
    (PointwiseConv(8, 16, strides=2, rngs=nnx.Rngs(0)), (8, 8, 8)),
    (nnx.Linear(12, 7, rngs=nnx.Rngs(0)), (12,)),
])
def test_xla_formula_equals_xla_cost_analysis(layer, shape):
    """Our padding-aware formula reproduces XLA's own count exactly (the number nnx.tabulate shows)."""
    model = One(layer)
    table = counting.count(model, shape)
    (rec,) = counting.reconcile(model, table)
    assert rec["xla_formula"] == rec["xla_measured"]
    assert rec["flops"] - rec["padding_taps_flops"] + rec["bias_adds"] == rec["xla_measured"]


def test_xla_formula_holds_on_a_whole_model():
    model = SmallCNN(1, 10, rngs=nnx.Rngs(0))
    for rec in counting.reconcile(model, counting.count(model, (16, 16, 1))):
        assert rec["xla_formula"] == rec["xla_measured"], rec["path"]


class TrainOnlyBranch(nnx.Module):
    """A head used only in training mode, like GoogLeNet's auxiliary classifiers."""

    def __init__(self):
        self.main = nnx.Linear(4, 2, rngs=nnx.Rngs(0))
        self.aux = nnx.Linear(4, 3, rngs=nnx.Rngs(1))
        self.deterministic = True

    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        return self.main(x) if self.deterministic else (self.main(x), self.aux(x))


def test_eval_mode_skips_training_only_branch_but_reports_its_parameters():
    m = TrainOnlyBranch()
    ev, tr = counting.count(m, (2, 2, 1), mode="eval"), counting.count(m, (2, 2, 1), mode="train")
    assert [r.path for r in ev.rows] == ["main"] and [r.path for r in tr.rows] == ["main", "aux"]
    assert ev.params_total == tr.params_total == 10 + 15
    assert ev.params == 10 and "15 parameters belong to layers" in str(ev)


def test_abstract_model_counts_like_a_real_one():
    from course import models

    a = counting.count(models.build("small_cnn", abstract=True), (16, 16, 1))
    b = counting.count(models.build("small_cnn"), (16, 16, 1))
    assert a.totals() == b.totals()


def test_cli_count_json(capsys):
    assert main(["count", "small_cnn", "--size", "32", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["input_shape"] == [32, 32, 1]
    assert {"path", "params", "macs", "flops"} <= set(d["rows"][0])
    assert d["totals"]["macs"] == sum(r["macs"] for r in d["rows"])
    assert d["rows"][0]["macs"] == 32 * 32 * 16 * 9


def test_cli_unknown_model_lists_known_ones(capsys):
    assert main(["count", "resnet5000"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'resnet5000'" in err and "small_cnn" in err


def test_pointwise_conv_equals_1x1_conv():
    conv = nnx.Conv(5, 3, kernel_size=(1, 1), strides=2, rngs=nnx.Rngs(0))
    pw = PointwiseConv(5, 3, strides=2, rngs=nnx.Rngs(1))
    pw.kernel[...] = conv.kernel[...]
    pw.bias[...] = conv.bias[...] + 0.5
    conv.bias[...] = conv.bias[...] + 0.5
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 7, 7, 5)), jnp.float32)
    np.testing.assert_allclose(pw(x), conv(x), rtol=1e-5, atol=1e-5)


def test_nnx_tabulate_reports_the_xla_convention():
    layer = nnx.Conv(3, 4, kernel_size=(3, 3), padding="SAME", rngs=nnx.Rngs(0))
    row = only_row(layer, (8, 8, 3))
    text = nnx.tabulate(One(layer), jnp.ones((1, 8, 8, 3)), compute_flops=True, console_kwargs={"width": 400})
    assert f" {row.xla_flops} " in text and f" {row.flops} " not in text
