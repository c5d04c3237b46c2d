"""course.paths: the one naming of a model's arrays that counting, gradients, the store and the optimizer share."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from course import paths


class Net(nnx.Module):
    """Attributes defined out of alphabetical order, a list of layers, and BatchNorm statistics."""

    def __init__(self, rngs: nnx.Rngs):
        self.zeta = nnx.Conv(1, 2, kernel_size=(3, 3), rngs=rngs)
        self.blocks = nnx.List([nnx.Linear(2, 2, rngs=rngs) for _ in range(11)])
        self.norm = nnx.BatchNorm(2, rngs=rngs)
        self.alpha = nnx.Linear(2, 3, rngs=rngs)

    def __call__(self, x):                                   # (B, 4, 4, 1)
        x = self.zeta(x).mean(axis=(1, 2))                   # (B, 2)
        for b in self.blocks:
            x = b(x)
        return self.alpha(self.norm(x))                      # (B, 3)


def test_names_from_nnx_paths_and_jax_key_paths_agree():
    model = Net(nnx.Rngs(0))
    flat = paths.flat_arrays(nnx.state(model))
    assert {"zeta/kernel", "blocks/10/bias", "norm/mean", "norm/var", "alpha/kernel"} <= set(flat)
    assert list(flat) == sorted(flat) and flat["zeta/kernel"].shape == (3, 3, 1, 2)
    # the same names through jax's key paths (what optax sees), with and without Variables as leaves
    for tree in (nnx.state(model), nnx.to_pure_dict(nnx.state(model))):
        names = [paths.name(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
        assert sorted(names) == list(flat)


def test_layer_arrays_follow_the_model_order_of_a_gradient():
    model = Net(nnx.Rngs(0))
    x = np.random.default_rng(0).normal(size=(5, 4, 4, 1)).astype(np.float32)
    grads = nnx.grad(lambda m: (m(jnp.asarray(x)) ** 2).sum())(model)
    kernels = paths.layer_arrays(model, grads)
    blocks = [f"blocks/{i}" for i in range(11)]  # by index: "blocks/2" before "blocks/10"
    assert list(kernels) == ["alpha", *blocks, "zeta"]  # nnx.iter_modules' order
    assert kernels["alpha"].shape == (2, 3)
    assert list(paths.layer_arrays(model, nnx.state(model), ("scale", "bias"))) == [
        "alpha", *blocks, "norm", "zeta"]


def test_labels_route_an_optax_multi_transform():
    model = Net(nnx.Rngs(0))
    rule = lambda name: "head" if name.startswith("alpha/") else "body"  # noqa: E731
    tx = optax.multi_transform({"head": optax.sgd(1.0), "body": optax.set_to_zero()},
                               lambda params: paths.labels(params, rule))
    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
    before = paths.flat_arrays(nnx.state(model, nnx.Param))
    grads = nnx.grad(lambda m: (m(jnp.arange(32.0).reshape(2, 4, 4, 1)) ** 2).sum())(model)
    opt.update(model, grads)
    after = paths.flat_arrays(nnx.state(model, nnx.Param))
    moved = {k for k in before if not np.array_equal(before[k], after[k])}
    assert moved == {"alpha/kernel", "alpha/bias"}


def test_names_of_an_abstract_model_equal_those_of_a_built_one():
    built = paths.flat_arrays(nnx.state(Net(nnx.Rngs(0))))
    assert paths.names(nnx.state(nnx.eval_shape(lambda: Net(nnx.Rngs(0))))) == list(built)
