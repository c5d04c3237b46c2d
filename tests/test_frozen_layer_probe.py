"""The control of notebook 03: a converged linear probe on a PlainNet's frozen layer (or on the raw pixels), and
what run_plain returns for it; checked against independent computations (the model's own forward pass, the
probe run by hand on the flattened pixels)."""
from __future__ import annotations

import numpy as np
import optax
import pytest
from flax import nnx

from course import data, transfer
from course.lessons import auxiliary_classifiers as ac


@pytest.fixture(scope="module")
def small_digits():
    ds = data.digits()
    pick = lambda n: np.arange(n)  # noqa: E731
    return data.Dataset("digits8 (a slice)", ds.x_train[pick(300)], ds.y_train[pick(300)], ds.x_test[pick(100)],
                        ds.y_test[pick(100)], ds.classes)


def test_layer_features_are_the_activations_a_head_reads():
    net = ac.build_plain(nnx.Rngs(0), depth=5, width=4, aux_after=(2, 4))
    x = np.random.default_rng(0).random((3, 8, 8, 1), dtype=np.float32)
    f = ac.layer_features(net, x, "conv2")
    ref = np.asarray(net.intermediates(x, heads=False)[1]["conv2"]).reshape(3, -1)
    assert f.shape == (3, 8 * 8 * 4)
    np.testing.assert_allclose(f, ref, rtol=1e-6, atol=1e-7)
    assert f.min() >= 0  # after the ReLU


def test_raw_pixel_probe_is_the_converged_probe_on_the_flattened_images(small_digits):
    ds = small_digits
    by_hand = transfer.converged_probe(ds.x_train.reshape(300, -1), ds.y_train, ds.x_test.reshape(100, -1),
                                       ds.y_test)
    assert ac.layer_probe(ds) == by_hand
    assert by_hand > 0.8  # 8x8 digits are nearly linearly separable from their pixels


def test_layer_probe_reads_a_frozen_layer_and_is_deterministic(small_digits):
    net = ac.build_plain(nnx.Rngs(0), depth=5, width=4, aux_after=(2, 4))
    before = np.asarray(net.convs[0].kernel[...]).copy()
    acc = ac.layer_probe(small_digits, net, "conv2")
    assert 0.5 < acc <= 1.0 and acc == ac.layer_probe(small_digits, net, "conv2")
    np.testing.assert_array_equal(np.asarray(net.convs[0].kernel[...]), before)  # frozen: nothing trained


def test_run_plain_returns_the_trained_network(small_digits):
    tx = optax.sgd(0.02, momentum=0.9)
    r = ac.run_plain(0, small_digits, 0.3, tx, epochs=1, batch_size=50, depth=5, width=4, aux_after=(2, 4))
    init = ac.build_plain(nnx.Rngs(0), depth=5, width=4, aux_after=(2, 4))  # the same network before training
    assert isinstance(r["model"], ac.PlainNet) and r["model"].deterministic
    moved = np.linalg.norm(np.asarray(r["model"].convs[0].kernel[...]) - np.asarray(init.convs[0].kernel[...]))
    assert moved / np.linalg.norm(np.asarray(init.convs[0].kernel[...])) == pytest.approx(r["stem_update"][-1])


def test_dashed_series_and_the_legend_beside_the_bands():
    fig = ac.plot_layer_series({"a": {"l1": 1.0, "l2": 2.0}, "b": {"l1": 1.0, "l2": 2.0}}, "y",
                               linestyles={"b": "--"})
    lines = {c.get_label(): c.lines[0].get_linestyle() for c in fig.axes[0].containers}  # errorbar containers
    assert lines == {"a": "-", "b": "--"}
    curves = {"run": (np.array([0.1, 0.2]), np.array([0.01, 0.02]))}
    fig = ac.plot_bands({"left": curves, "right": curves}, ylabel={})
    assert fig.axes[0].get_legend() is None and fig.axes[1].get_legend() is not None
