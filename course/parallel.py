"""Data-parallel training with JAX's own sharding: one code path for 1 or N devices.

A 1-D device mesh with axis ``"data"``: each batch is split along its first axis across the devices, parameters
and optimizer state are replicated. The train step stays the ordinary
:data:`course.training.pure_train_step`; ``jit`` sees sharded inputs and XLA's SPMD partitioner inserts the gradient all-reduce (and, for BatchNorm, the all-reduce
of batch statistics), so the result equals the single-device step up to floating-point reassociation
(tests/test_train_cli.py checks it with 8 simulated CPU devices).

Across several processes (hosts, or CPU processes on one machine): :func:`course.distributed.join` first, on
every process; ``jax.devices()`` then lists every process's devices and :func:`make_mesh` spans them all. The same
jitted programs run; each process holds only its devices' rows of a batch: gathered on the device from a dataset
every process holds whole (:class:`course.device_data.DeviceData`), :func:`place_rows` for a host batch every
process holds whole (evaluation), :func:`course.distributed.global_batch` for rows each process loaded itself
(the folder pipeline). tests/test_distributed.py checks that 2 processes train to the same weights as 1 process
with 2 devices.
"""
from __future__ import annotations

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def make_mesh(n_devices: int | None = None) -> Mesh:
    """A 1-D mesh named ``"data"`` over the first ``n_devices`` devices (default: all)."""
    devices = jax.devices()
    n = len(devices) if n_devices is None else n_devices
    if not 1 <= n <= len(devices):
        raise ValueError(f"asked for {n} devices but jax sees {len(devices)} ({devices[0].platform}); on CPU, "
                         f"simulate more with XLA_FLAGS=--xla_force_host_platform_device_count={n} before jax starts")
    return jax.make_mesh((n,), ("data",), devices=devices[:n])


def shard_batch(mesh: Mesh, *arrays):
    """Put each array on the mesh split along its first (batch) axis, which must divide by the device count."""
    n = mesh.devices.size
    out = []
    for a in arrays:
        if a.shape[0] % n:
            raise ValueError(f"batch of {a.shape[0]} does not split evenly over {n} devices; "
                             f"use a batch size divisible by {n}")
        out.append(jax.device_put(a, NamedSharding(mesh, P("data"))))
    return out if len(out) > 1 else out[0]


def place_rows(mesh: Mesh, *arrays):
    """Host arrays that every process holds whole, laid out over ``mesh`` split along the first axis: each
    process copies only its own devices' rows (``jax.make_array_from_process_local_data`` with the global shape
    given). In one process this is :func:`shard_batch`."""
    sharding = NamedSharding(mesh, P("data"))
    out = [jax.make_array_from_process_local_data(sharding, a, a.shape) for a in arrays]
    return out if len(out) > 1 else out[0]


def replicate(mesh: Mesh, *nodes) -> None:
    """Place every array of the given NNX objects (model, optimizer) on all devices of ``mesh``, in place. With
    several processes, each must hold the same values (built from the same seed, or restored)."""
    replicated = NamedSharding(mesh, P())
    for node in nodes:
        state = nnx.state(node)
        nnx.update(node, jax.device_put(state, replicated))
