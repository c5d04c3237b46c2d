"""A small CNN and an MLP of comparable capacity (notebook 01), in Flax NNX.

The CNN follows the classic LeNet recipe (LeCun et al., 1998): 3x3 convolutions that share their weights across
positions, ReLU, 2x2 max pooling, and a global average pool before the classifier, so its parameter count does
not depend on the image size. The MLP sees the same pixels through fully connected layers.
"""
from __future__ import annotations

import jax
import numpy as np
import jax.numpy as jnp
from flax import nnx


class SmallCNN(nnx.Module):
    """conv3x3(c1) - ReLU - maxpool2 - conv3x3(c2) - ReLU - maxpool2 - conv3x3(c3) - ReLU - global avg pool - linear.

    ``__call__`` returns logits (B, num_classes); :meth:`intermediates` also returns every stage's activations.
    """

    def __init__(self, in_ch: int = 1, num_classes: int = 10, channels: tuple[int, int, int] = (16, 32, 64),
                 *, rngs: nnx.Rngs):
        c1, c2, c3 = channels
        self.conv1 = nnx.Conv(in_ch, c1, kernel_size=(3, 3), padding="SAME", rngs=rngs)
        self.conv2 = nnx.Conv(c1, c2, kernel_size=(3, 3), padding="SAME", rngs=rngs)
        self.conv3 = nnx.Conv(c2, c3, kernel_size=(3, 3), padding="SAME", rngs=rngs)
        self.head = nnx.Linear(c3, num_classes, rngs=rngs)

    def intermediates(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """(logits, out): ``out`` maps stage names to activations, as in big_vision's models."""
        out = {}
        x = out["conv1"] = nnx.relu(self.conv1(x))            # (B, H, W, c1)
        x = out["pool1"] = nnx.max_pool(x, (2, 2), (2, 2))    # (B, H/2, W/2, c1)
        x = out["conv2"] = nnx.relu(self.conv2(x))            # (B, H/2, W/2, c2)
        x = out["pool2"] = nnx.max_pool(x, (2, 2), (2, 2))    # (B, H/4, W/4, c2)
        x = out["conv3"] = nnx.relu(self.conv3(x))            # (B, H/4, W/4, c3)
        x = out["gap"] = x.mean(axis=(1, 2))                  # (B, c3)
        out["logits"] = self.head(x)                          # (B, num_classes)
        return out["logits"], out

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.intermediates(x)[0]


class MLP(nnx.Module):
    """flatten - [linear - ReLU] x len(hidden) - linear. Every weight sees one pixel position only."""

    def __init__(self, in_features: int, num_classes: int = 10, hidden: tuple[int, ...] = (64,), *, rngs: nnx.Rngs):
        sizes = (in_features, *hidden)
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        self.head = nnx.Linear(sizes[-1], num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], -1)  # (B, H*W*C)
        for layer in self.layers:
            x = nnx.relu(layer(x))
        return self.head(x)


# ----------------------------------------------------------------------------------------------------------
from course.models.registry import register  # noqa: E402


@register("small_cnn", (16, 16, 1), 10, "notebook 01's CNN: 3 conv layers, global average pool (digits on 16x16)")
def small_cnn(num_classes: int = 10, input_shape=(16, 16, 1), *, rngs: nnx.Rngs) -> SmallCNN:
    return SmallCNN(input_shape[-1], num_classes, rngs=rngs)


@register("mlp", (16, 16, 1), 10, "notebook 01's MLP: one hidden layer of 64 units on 16x16 digits")
def mlp(num_classes: int = 10, input_shape=(16, 16, 1), *, rngs: nnx.Rngs) -> MLP:
    return MLP(int(np.prod(input_shape)), num_classes, rngs=rngs)


# ----------------------------------------------------------------------------------------------------------
class LocallyConnected(nnx.Module):
    """A 3x3 "convolution" without weight sharing: every output position has its own filter (and bias).

    The locally connected layer of Taigman et al. (DeepFace, 2014) and LeCun's discussion of "unshared
    convolutions": locality kept, sharing removed. Input (B, H, W, C_in) -> output (B, H, W, C_out), SAME padding,
    stride 1. Parameters: H * W * C_out * (k * k * C_in + 1). The patches are k*k shifted slices of the padded
    input (feature order C_in, kh, kw, as ``lax.conv_general_dilated_patches``) and the product is one einsum:
    slices and dense products are fast forwards and backwards on XLA's CPU backend, while the patch extraction
    as a convolution was 10x slower to train (../../shared/GUIDE.md: slow convolution backward passes).
    """

    def __init__(self, height: int, width: int, in_ch: int, out_ch: int, kernel_size: int = 3, *, rngs: nnx.Rngs):
        self.kernel_size = kernel_size
        fan_in = kernel_size * kernel_size * in_ch
        # lecun_normal per position (fan-in k*k*C_in), as nnx.Conv initialises its one shared filter bank
        init = nnx.initializers.lecun_normal(batch_axis=(0, 1))
        self.kernel = nnx.Param(init(rngs.params(), (height, width, fan_in, out_ch)))  # (H, W, k*k*C_in, C_out)
        self.bias = nnx.Param(jnp.zeros((height, width, out_ch)))                      # (H, W, C_out)

    def patches(self, x: jax.Array) -> jax.Array:
        """(B, H, W, C_in) -> (B, H, W, C_in * k * k): the k x k neighbourhood of every pixel, zero-padded."""
        k, (h, w) = self.kernel_size, x.shape[1:3]
        xp = jnp.pad(x, ((0, 0), (k // 2, (k - 1) // 2), (k // 2, (k - 1) // 2), (0, 0)))
        taps = [xp[:, i:i + h, j:j + w] for i in range(k) for j in range(k)]  # k*k of (B, H, W, C_in)
        return jnp.stack(taps, -1).reshape(*x.shape[:3], -1)  # feature index c*k*k + i*k + j

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.shape[1:3] != self.kernel.shape[:2]:
            raise ValueError(f"LocallyConnected was built for {self.kernel.shape[0]}x{self.kernel.shape[1]} inputs "
                             f"(one filter per position), got {x.shape[1]}x{x.shape[2]}; build it for this size")
        return jnp.einsum("bhwf,hwfo->bhwo", self.patches(x), self.kernel[...]) + self.bias[...]


class LocallyConnectedNet(nnx.Module):
    """:class:`SmallCNN` with every convolution replaced by a :class:`LocallyConnected` layer: the same
    locality, pooling, global average pool and head, but no weight sharing. Built for one input size."""

    def __init__(self, height: int, width: int, in_ch: int = 1, num_classes: int = 10,
                 channels: tuple[int, int, int] = (16, 32, 64), *, rngs: nnx.Rngs):
        if height % 4 or width % 4:
            raise ValueError(f"height and width must be multiples of 4 (two 2x2 poolings), got {height}x{width}")
        c1, c2, c3 = channels
        self.conv1 = LocallyConnected(height, width, in_ch, c1, rngs=rngs)
        self.conv2 = LocallyConnected(height // 2, width // 2, c1, c2, rngs=rngs)
        self.conv3 = LocallyConnected(height // 4, width // 4, c2, c3, rngs=rngs)
        self.head = nnx.Linear(c3, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = nnx.max_pool(nnx.relu(self.conv1(x)), (2, 2), (2, 2))  # (B, H/2, W/2, c1)
        x = nnx.max_pool(nnx.relu(self.conv2(x)), (2, 2), (2, 2))  # (B, H/4, W/4, c2)
        x = nnx.relu(self.conv3(x)).mean(axis=(1, 2))              # (B, c3)
        return self.head(x)                                        # (B, num_classes)


@register("locally_connected", (24, 24, 1), 10,
          "notebook 01's small CNN without weight sharing (one 3x3 filter per position), for 24x24 inputs")
def locally_connected(num_classes: int = 10, input_shape=(24, 24, 1), *, rngs: nnx.Rngs) -> LocallyConnectedNet:
    return LocallyConnectedNet(input_shape[0], input_shape[1], input_shape[-1], num_classes, rngs=rngs)
