"""course.lessons.auxiliary_classifiers (notebook 03): the plain network, gradients term by term, per-weight RMS,
cosines and the network figure, each checked against an independent computation (nnx.grad of the whole loss,
numpy formulas, the model's own layout)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from course import models
from course.lessons import auxiliary_classifiers as ac
from course.models.inception import googlenet_loss

X = np.asarray(jax.random.uniform(jax.random.key(0), (6, 8, 8, 1)))
Y = np.array([0, 1, 2, 3, 4, 5], np.int32)


@pytest.fixture(scope="module")
def plain():
    return ac.build_plain(nnx.Rngs(0), depth=5, width=4, aux_after=(2, 4))


def test_plain_net_heads_only_in_train_mode(plain):
    plain.train()
    logits, out = plain.intermediates(jnp.asarray(X))
    assert logits.shape == out["aux1"].shape == out["aux2"].shape == (6, 10)
    assert [k for k in out if k.startswith("conv")] == [f"conv{i}" for i in range(1, 6)]
    plain.eval()
    assert not any(k.startswith("aux") for k in plain.intermediates(jnp.asarray(X))[1])
    assert set(plain.intermediates(jnp.asarray(X), heads=True)[1]) >= {"aux1", "aux2"}


def test_part_grads_combine_to_the_gradient_of_the_whole_loss(plain):
    parts = ac.loss_part_grads(plain, X, Y)
    assert list(parts) == ["main", "aux1", "aux2"]
    assert list(parts["main"])[:5] == ac.conv_layers(plain)  # forward order
    plain.train()
    whole = nnx.grad(lambda m: googlenet_loss(m, jnp.asarray(X), jnp.asarray(Y), 0.3)[0])(plain)
    plain.eval()
    combined = ac.combine(parts, 0.3)
    np.testing.assert_allclose(combined["convs/0"], np.asarray(whole.convs[0].kernel[...]), rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(combined["fc"], np.asarray(whole.fc.kernel[...]), rtol=1e-4, atol=1e-9)
    # a head's loss cannot reach the layers above it: aux1 reads layer 2, so layers 3.. get nothing from it
    assert np.all(parts["aux1"]["convs/2"] == 0) and np.any(parts["aux1"]["convs/0"] != 0)


def test_rms_and_cosine_against_numpy():
    g = {"convs/0": np.array([[3.0, 4.0]]), "heads/1/fc": np.ones((2, 2))}
    assert ac.rms_per_layer(g) == {"conv1": pytest.approx(np.sqrt(12.5)), "aux2/fc": pytest.approx(1.0)}
    assert ac.cosine(np.array([1.0, 0.0]), np.array([0.0, 2.0])) == pytest.approx(0.0)
    assert ac.cosine(np.array([1.0, 1.0]), np.array([-2.0, -2.0])) == pytest.approx(-1.0)


def test_plain_net_rejects_bad_arguments():
    with pytest.raises(ValueError, match="aux_after"):
        ac.PlainNet(depth=4, aux_after=(4,), rngs=nnx.Rngs(0))
    net = ac.PlainNet(depth=2, width=2, aux_after=(1,), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="input_shape=\\(16, 16, 1\\)"):
        net(jnp.zeros((1, 16, 16, 1)))


def test_block_rms_pools_every_kernel_of_a_block():
    mini = models.build("googlenet_mini", abstract=True)
    grads = {"conv1/conv": np.full((3, 3, 1, 8), 2.0), "inception3a/conv1x1/conv": np.ones((1, 1, 24, 8)),
             "inception3a/conv3x3/conv": np.full((3, 3, 4, 8), 3.0)}
    grads.update({b: np.ones(1) for b in ac.block_names(mini) if b not in ("conv1", "inception3a")})
    rms = ac.block_rms(grads, mini)
    n1, n3 = 24 * 8, 9 * 4 * 8
    assert rms["conv1"] == pytest.approx(2.0)
    assert rms["3a"] == pytest.approx(np.sqrt((n1 * 1 + n3 * 9) / (n1 + n3)))
    assert list(rms)[-1] == "fc"


def test_network_figure_has_one_softmax_per_classifier():
    paper = models.build("googlenet", abstract=True)
    fig = ac.plot_network(paper)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert sum(t.startswith("softmax") for t in texts) == 3
    assert sum(t == "4a" or t == "4d" for t in texts) == 2 and texts.count("aux1\nhead") == 1
    assert all(t.get_fontsize() >= 9 for t in fig.axes[0].texts)
