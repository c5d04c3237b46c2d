"""The bfloat16 policy of course.precision, read off the train step's own program (jaxpr), not its results."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from course import models, precision, training


def _equations(jaxpr):
    """Every equation of a jaxpr, sub-programs (jit, custom_vjp, scan, ...) included."""
    for eqn in jaxpr.eqns:
        yield eqn
        for p in eqn.params.values():
            for sub in (p if isinstance(p, (list, tuple)) else [p]):
                inner = getattr(sub, "jaxpr", sub)
                if isinstance(inner, jax.extend.core.Jaxpr):
                    yield from _equations(inner)


def _step_program(name, dtype, shape=(8, 8, 1)):
    model = models.build(name, seed=0, input_shape=shape)
    opt = training.make_optimizer(model, 1e-3)
    model.train()
    static, leaves = training.split_state(model, opt)
    x = jnp.asarray(np.random.default_rng(0).random((4, *shape), dtype=np.float32))  # (B, H, W, C)
    y = jnp.arange(4, dtype=jnp.int32)
    loss_fn = precision.mixed_precision(models.get_spec(name).loss or training.cross_entropy, dtype)
    jaxpr = jax.make_jaxpr(training._pure_step, static_argnums=(0, 5))(static, leaves, x, y, None, loss_fn)
    return model, opt, static, leaves, x, y, loss_fn, list(_equations(jaxpr.jaxpr))


def _dtypes(eqns, primitive):
    return {str(v.aval.dtype) for e in eqns if e.primitive.name == primitive for v in e.invars}


@pytest.mark.parametrize("name", ["resnet20", "small_cnn"])
def test_bfloat16_step_convolves_in_bfloat16_and_takes_the_softmax_in_float32(name):
    *_, eqns = _step_program(name, "bfloat16")
    assert _dtypes(eqns, "conv_general_dilated") == {"bfloat16"}  # forward and backward convolutions
    assert _dtypes(eqns, "dot_general") == {"bfloat16"}           # the classifier's matmul
    assert _dtypes(eqns, "exp") == {"float32"} and _dtypes(eqns, "log") == {"float32"}  # log-softmax
    *_, eqns32 = _step_program(name, "float32")
    assert _dtypes(eqns32, "conv_general_dilated") == {"float32"}  # the control: float32 stays float32


def test_bfloat16_step_keeps_weights_statistics_and_optimizer_state_float32():
    model, opt, static, leaves, x, y, loss_fn, eqns = _step_program("resnet20", "bfloat16")
    # the batch statistics are reduced in float32: BatchNorm's mean is a float32 reduction of the activations
    assert "float32" in {str(e.outvars[0].aval.dtype) for e in eqns if e.primitive.name == "reduce_sum"}
    before = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
    leaves, loss, acc = training.pure_train_step(static, leaves, x, y, None, loss_fn)
    training.merge_state((model, opt), static, leaves)
    assert loss.dtype == jnp.float32
    for kind in (nnx.Param, nnx.BatchStat):
        assert {a.dtype for a in jax.tree.leaves(nnx.state(model, kind))} == {jnp.dtype("float32")}, kind
    floats = [a for a in jax.tree.leaves(nnx.state(opt)) if jnp.issubdtype(a.dtype, jnp.floating)]
    assert {a.dtype for a in floats} == {jnp.dtype("float32")}  # Adam's moments
    after = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: bool(np.any(a != b)), before, after))
    assert all(moved)  # every running mean and variance was updated
    # ... in float32: a statistic rounded through bfloat16 on the way would equal its own bfloat16 rounding
    stats = np.concatenate([np.ravel(a) for a in jax.tree.leaves(after)])
    assert np.mean(stats != stats.astype(jnp.bfloat16).astype(np.float32)) > 0.5


def test_low_precision_copy_leaves_the_model_alone():
    model = models.build("resnet20", seed=0, input_shape=(8, 8, 1))
    low = precision.low_precision_copy(model, jnp.bfloat16)
    assert {a.dtype for a in jax.tree.leaves(nnx.state(low, nnx.Param))} == {jnp.dtype("bfloat16")}
    assert {a.dtype for a in jax.tree.leaves(nnx.state(low, nnx.BatchStat))} == {jnp.dtype("float32")}
    assert {a.dtype for a in jax.tree.leaves(nnx.state(model, nnx.Param))} == {jnp.dtype("float32")}
    assert all(m.dtype is None for _, m in nnx.iter_modules(model) if isinstance(m, nnx.BatchNorm))
