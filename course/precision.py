"""Mixed precision: keep float32 master weights, compute the forward and backward passes in bfloat16.

On a GPU's tensor cores bfloat16 matrix products run several times faster than float32 (an H100 SXM peaks at
about 989 dense bf16 TFLOP/s, against about 495 for float32 inputs run as TF32), and bfloat16 keeps float32's
exponent range, so unlike float16 it needs no loss scaling (Kalamkar et al., "A Study of BFLOAT16 for Deep Learning
Training", 2019). The policy, the one of flax's ImageNet example and of Micikevicius et al. (ICLR 2018):

* master weights stay float32 in the model and the optimizer: small updates are not lost to bfloat16's 8-bit
  mantissa. Each step computes with a bfloat16 copy of the parameters (``nnx.Param``).
* convolutions and matrix products run on bfloat16 inputs and weights, so activations are bfloat16.
* BatchNorm statistics stay float32: the running mean and variance are never cast, the batch statistics are
  computed in float32 (flax's ``_compute_stats`` promotes to at least float32), and the normalised output is
  cast back to bfloat16 for the next layer.
* the loss and its softmax run on float32 logits (the course's losses upcast the logits they are given:
  :func:`course.training.cross_entropy`, :func:`course.models.inception.googlenet_loss`).

tests/test_precision.py checks each point on the compiled step's program.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from course.training import LossFn

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def low_precision_copy(model: nnx.Module, dtype) -> nnx.Module:
    """A copy of ``model`` whose parameters are ``dtype`` and whose BatchNorm layers output ``dtype`` (their
    statistics stay float32); the copy's gradients flow back to ``model``'s float32 parameters through the cast."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    low = nnx.merge(graphdef, jax.tree.map(lambda a: a.astype(dtype), params), rest)
    for _, m in nnx.iter_modules(low):
        if isinstance(m, nnx.BatchNorm):
            m.dtype = dtype  # normalise in float32, hand dtype to the next layer
    return low


@functools.lru_cache(maxsize=None)  # one wrapper per (loss, dtype): jit's static argument stays the same object
def mixed_precision(loss_fn: LossFn, dtype_name: str = "bfloat16") -> LossFn:
    """``loss_fn`` evaluated on :func:`low_precision_copy` of the model with a ``dtype`` input (the module
    docstring's policy). Mutable state the forward pass changes (BatchNorm statistics, RNG counters) is copied
    back into the model. Returns (float32 loss, float32 logits)."""
    if dtype_name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype_name!r}")
    if dtype_name == "float32":
        return loss_fn
    dtype = DTYPES[dtype_name]

    def wrapped(model, x, y, params):
        low = low_precision_copy(model, dtype)
        loss, logits = loss_fn(low, x.astype(dtype), y, params)
        nnx.update(model, nnx.state(low, nnx.Not(nnx.Param)))  # statistics: float32 already
        return loss.astype(jnp.float32), logits.astype(jnp.float32)

    wrapped.__name__ = f"{getattr(loss_fn, '__name__', 'loss')}_{dtype_name}"
    return wrapped
