"""Training data held on the accelerator: each batch is gathered (or generated) there, never copied per step.

:func:`course.training.fit` puts a dataset's training split on the device once, as it is stored: float32 images,
or uint8 bytes (CIFAR-10 read with ``dtype=np.uint8``: 150 MB instead of 600 MB), which :func:`to_float`
turns into float32 in [0, 1] inside the gather. Each epoch's order is drawn on the host, the same permutation
:func:`course.data.batches` draws for the same seed (so results equal a host-fed run's to the bit), and goes to
the device as one (steps, batch) int32 array; the host then only dispatches. :class:`SyntheticData` makes random
images from a key on the device, for throughput runs at any scale without host memory.

With a mesh (:mod:`course.parallel`) the dataset is replicated on every device and each gathered batch is laid
out split along its first axis, as :func:`course.parallel.shard_batch` would place it.

Where data does come from the host (evaluation, :func:`on_device`), the next batch's copy is started before
the current one is used: the copy overlaps the computation (flax's ``prefetch_to_device`` pattern).
"""
from __future__ import annotations

import collections
import functools
from typing import Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def to_float(x: jax.Array) -> jax.Array:
    """uint8 image bytes -> float32 in [0, 1]; floating images unchanged."""
    return x.astype(jnp.float32) / 255.0 if x.dtype == jnp.uint8 else x


def _batch_sharding(mesh: Mesh | None, batch_size: int) -> NamedSharding | None:
    if mesh is None:
        return None
    n = mesh.devices.size
    if batch_size % n:
        raise ValueError(f"batch of {batch_size} does not split evenly over {n} devices; "
                         f"use a batch size divisible by {n}")
    return NamedSharding(mesh, P("data"))


@functools.partial(jax.jit, static_argnames=("sharding",))
def _gather(x, y, order, i, sharding=None):
    idx = order[i]                                        # (B,) indices of batch i
    xb, yb = to_float(jnp.take(x, idx, axis=0)), jnp.take(y, idx, axis=0)  # (B, H, W, C), (B,)
    if sharding is not None:
        xb, yb = jax.sharding.reshard((xb, yb), sharding)  # split along the batch axis over the mesh
    return xb, yb


class DeviceData:
    """Images ``x`` (N, H, W, C) and labels ``y`` (N,) on the device (replicated over ``mesh`` if given)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, mesh: Mesh | None = None):
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} examples but y has {len(y)}")
        self.mesh = mesh
        self._where = NamedSharding(mesh, P()) if mesh is not None else None  # replicated on every device
        self.x, self.y = jax.device_put(x, self._where), jax.device_put(np.asarray(y, np.int32), self._where)

    def __len__(self) -> int:
        return len(self.y)

    def epoch(self, batch_size: int, seed: int) -> Iterator[tuple[jax.Array, jax.Array]]:
        """The full batches of one epoch in the order of ``course.data.batches(..., shuffle=True, seed=seed,
        drop_last=True)``, gathered on the device."""
        sharding = _batch_sharding(self.mesh, batch_size)
        steps = len(self) // batch_size
        order = np.random.default_rng(seed).permutation(len(self))[:steps * batch_size]
        order = jax.device_put(order.reshape(steps, batch_size).astype(np.int32), self._where)  # (steps, B)
        for i in range(steps):
            yield _gather(self.x, self.y, order, i, sharding)


@functools.partial(jax.jit, static_argnames=("shape", "num_classes", "sharding"))
def _random_batch(key, i, shape, num_classes, sharding=None):
    kx, ky = jax.random.split(jax.random.fold_in(key, i))
    xb = jax.random.uniform(kx, shape, jnp.float32)                 # (B, H, W, C) in [0, 1)
    yb = jax.random.randint(ky, shape[:1], 0, num_classes, jnp.int32)  # (B,)
    if sharding is not None:
        xb, yb = jax.sharding.reshard((xb, yb), sharding)  # split along the batch axis over the mesh
    return xb, yb


class SyntheticData:
    """``n`` random images of ``input_shape`` with random labels, generated batch by batch on the device from a
    key (for timing: there is nothing to learn). ``test`` is a small host-side split for :func:`fit`'s
    per-epoch evaluation."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, n: int, seed: int = 0,
                 mesh: Mesh | None = None, n_test: int = 256):
        self.input_shape, self.num_classes, self.n, self.seed, self.mesh = tuple(input_shape), num_classes, n, seed, mesh
        rng = np.random.default_rng(seed)
        self.test = (rng.random((n_test, *self.input_shape), dtype=np.float32),
                     rng.integers(0, num_classes, n_test).astype(np.int32))
        self.name = "synthetic{}x{}x{}".format(*self.input_shape)

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"SyntheticData({self.name!r}: {self.n} images generated on the device, {self.num_classes} classes)"

    def epoch(self, batch_size: int, seed: int) -> Iterator[tuple[jax.Array, jax.Array]]:
        sharding = _batch_sharding(self.mesh, batch_size)
        key = jax.device_put(jax.random.key(self.seed * 100_003 + seed),
                             NamedSharding(self.mesh, P()) if self.mesh is not None else None)
        for i in range(self.n // batch_size):
            yield _random_batch(key, i, (batch_size, *self.input_shape), self.num_classes, sharding)


def on_device(batches: Iterable, ahead: int = 2, put=jax.device_put) -> Iterator:
    """``batches`` (arrays or tuples of arrays on the host) copied to the device ``ahead`` at a time by ``put``:
    the copy of the next batch is under way while the current one is used."""
    queue: collections.deque = collections.deque()
    for b in batches:
        queue.append(put(b))
        if len(queue) == ahead:
            yield queue.popleft()
    while queue:
        yield queue.popleft()
