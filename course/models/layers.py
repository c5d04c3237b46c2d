"""Layers shared by the course's model families.

:class:`PointwiseConv` is a 1x1 convolution written as what it is: one fully connected layer applied at every
pixel (Lin et al., "Network in Network", 2013; Szegedy et al., "Going deeper with convolutions", 2014, Sec. 4).
Numerically it equals ``nnx.Conv(kernel_size=(1, 1))`` (notebook 02 shows it), but XLA on CPU runs its backward
pass 15-25x faster as a matrix product than through ``lax.conv`` (measured on a 2-core CPU with XLA 0.10), which is what lets the
course train Inception networks on a laptop. :mod:`course.counting` counts it as the 1x1 convolution it is.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class PointwiseConv(nnx.Module):
    """A 1x1 convolution ``in_features -> out_features`` with optional stride, on (B, H, W, C) inputs.

    Parameters have the same shapes as ``nnx.Conv(in, out, (1, 1))``: kernel (1, 1, in, out) and bias (out,).
    """

    kernel_size = (1, 1)
    padding = "VALID"
    feature_group_count = 1

    def __init__(self, in_features: int, out_features: int, *, strides: int = 1, use_bias: bool = True,
                 kernel_init=nnx.initializers.lecun_normal(), rngs: nnx.Rngs):
        self.in_features, self.out_features = in_features, out_features
        self.strides = (strides, strides)
        self.kernel = nnx.Param(kernel_init(rngs.params(), (1, 1, in_features, out_features)))
        self.bias = nnx.Param(jnp.zeros((out_features,))) if use_bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        s = self.strides[0]
        if s > 1:
            x = x[:, ::s, ::s, :]  # a strided 1x1 conv only ever reads these pixels
        y = jnp.einsum("bhwc,cd->bhwd", x, self.kernel[0, 0])  # (B, H, W, out)
        return y + self.bias[...] if self.bias is not None else y
