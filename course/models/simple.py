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
