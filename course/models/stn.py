"""A spatial transformer in front of a CNN (Jaderberg et al., "Spatial Transformer Networks", NeurIPS 2015).

A small localisation network looks at the input and predicts an affine transform ``theta`` (2x3); the input is
resampled through it (bilinear, Sec. 3.3) and the result goes to an ordinary CNN. Nothing tells the localisation
net what to do: it learns whatever transform makes the classifier's loss small, for rotated digits typically a
partial un-rotation. Convolution gives translation equivariance for free; an STN is one way to *learn* tolerance
to other transformations, such as rotation, which convolution does not have.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from course.models.registry import register
from course.models.simple import SmallCNN


def affine_grid(theta: jax.Array, height: int, width: int) -> jax.Array:
    """Sampling positions (B, H, W, 2) as (row, col) pixel coordinates for affine ``theta`` (B, 2, 3).

    ``theta`` maps output coordinates to input coordinates, both normalised to [-1, 1] at pixel centres
    (x to the right, y down), so the identity [[1, 0, 0], [0, 1, 0]] samples every pixel at its own place.
    """
    xs = (2 * jnp.arange(width) + 1) / width - 1
    ys = (2 * jnp.arange(height) + 1) / height - 1
    gy, gx = jnp.meshgrid(ys, xs, indexing="ij")
    pts = jnp.stack([gx, gy, jnp.ones_like(gx)], -1)  # (H, W, 3)
    src = jnp.einsum("hwk,bjk->bhwj", pts, theta)  # (B, H, W, 2): (x, y) in [-1, 1]
    col = ((src[..., 0] + 1) * width - 1) / 2
    row = ((src[..., 1] + 1) * height - 1) / 2
    return jnp.stack([row, col], -1)


def bilinear_sample(x: jax.Array, coords: jax.Array) -> jax.Array:
    """Bilinear samples of images x (B, H, W, C) at (row, col) coords (B, H', W', 2); zero outside."""
    def one_channel(img, rc):  # img (H, W), rc (H', W', 2)
        return jax.scipy.ndimage.map_coordinates(img, [rc[..., 0], rc[..., 1]], order=1, mode="constant", cval=0.0)

    per_image = jax.vmap(one_channel, in_axes=(2, None), out_axes=2)  # over channels
    return jax.vmap(per_image)(x, coords)


def rotation_theta(degrees: jax.Array) -> jax.Array:
    """Affine matrices (B, 2, 3) that rotate an image counter-clockwise by ``degrees`` (B,) about its centre."""
    a = jnp.deg2rad(degrees)
    c, s = jnp.cos(a), jnp.sin(a)
    z = jnp.zeros_like(a)
    # output point p samples the input at R(-a) p (y points down, so the signs flip vs the usual rotation)
    return jnp.stack([jnp.stack([c, -s, z], -1), jnp.stack([s, c, z], -1)], -2)


class SpatialTransformer(nnx.Module):
    """Localisation net (conv-pool-conv-pool-linear) -> theta (B, 2, 3) -> bilinear resampling of the input."""

    def __init__(self, in_ch: int = 1, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(in_ch, 8, kernel_size=(3, 3), padding="SAME", rngs=rngs)
        self.conv2 = nnx.Conv(8, 16, kernel_size=(3, 3), padding="SAME", rngs=rngs)
        self.fc = nnx.Linear(16, 32, rngs=rngs)
        # starts as the identity transform (the paper's initialisation), so training begins from "do nothing"
        self.theta = nnx.Linear(32, 6, kernel_init=nnx.initializers.zeros,
                                bias_init=lambda *_: jnp.array([1.0, 0, 0, 0, 1, 0]), rngs=rngs)

    def transform(self, x: jax.Array) -> jax.Array:
        h = nnx.max_pool(nnx.relu(self.conv1(x)), (2, 2), (2, 2))  # (B, H/2, W/2, 8)
        h = nnx.relu(self.conv2(h)).mean(axis=(1, 2))               # (B, 16)
        return self.theta(nnx.relu(self.fc(h))).reshape(-1, 2, 3)   # (B, 2, 3)

    def __call__(self, x: jax.Array) -> jax.Array:
        return bilinear_sample(x, affine_grid(self.transform(x), x.shape[1], x.shape[2]))


class STNClassifier(nnx.Module):
    """SpatialTransformer followed by :class:`~course.models.simple.SmallCNN`."""

    def __init__(self, in_ch: int = 1, num_classes: int = 10, *, rngs: nnx.Rngs):
        self.stn = SpatialTransformer(in_ch, rngs=rngs)
        self.cnn = SmallCNN(in_ch, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.cnn(self.stn(x))


@register("stn_cnn", (16, 16, 1), 10, "notebook 01's spatial transformer in front of the small CNN")
def stn_cnn(num_classes: int = 10, input_shape=(16, 16, 1), *, rngs: nnx.Rngs) -> STNClassifier:
    return STNClassifier(input_shape[-1], num_classes, rngs=rngs)
