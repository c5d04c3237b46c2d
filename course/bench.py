"""Per-step time of a model's full train step (forward, backward, Adam update) on synthetic data.

Throughput is reported with the counted cost: a train step costs about 3x the forward MACs (forward, plus the
backward pass's two products per layer: gradient w.r.t. inputs and w.r.t. weights), a standard estimate
(Kaplan et al. 2020, Sec. 2.1). Timings are medians over repeated steps after one compile; they are figures to
print, never something a test asserts.
"""
from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from course import counting, models, training


@dataclasses.dataclass
class BenchResult:
    model: str
    batch: int
    input_shape: tuple[int, int, int]
    compile_s: float
    step_ms: float
    macs_per_example: int

    @property
    def images_per_s(self) -> float:
        return self.batch / (self.step_ms / 1e3)

    @property
    def gflops_per_s(self) -> float:
        """Achieved GFLOP/s with FLOPs = 2 x MACs and a train step = 3 x the forward pass."""
        return 3 * 2 * self.macs_per_example * self.images_per_s / 1e9

    def __str__(self) -> str:
        shape = "x".join(map(str, self.input_shape))
        return (f"{self.model:<16} {shape:>9} batch {self.batch:>4}  compile {self.compile_s:5.1f} s  "
                f"step {self.step_ms:8.1f} ms  {self.images_per_s:9.0f} img/s  {self.gflops_per_s:7.2f} GFLOP/s")


def bench_train_step(name: str, batch: int | None = None, steps: int = 10, seed: int = 0) -> BenchResult:
    """Compile and time ``steps`` train steps of registered model ``name`` at its notebook input size."""
    spec = models.get_spec(name)
    batch = batch or spec.bench_batch
    model = models.build(name, seed=seed)
    macs = counting.count(model, spec.input_shape, name).macs
    opt = training.make_optimizer(model, 1e-3)
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((batch, *spec.input_shape)), jnp.float32)
    y = jnp.asarray(rng.integers(0, spec.num_classes, batch), jnp.int32)
    model.train()
    t0 = time.perf_counter()
    jax.block_until_ready(training.train_step(model, opt, x, y))
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        jax.block_until_ready(training.train_step(model, opt, x, y))
        times.append(time.perf_counter() - t0)
    return BenchResult(name, batch, spec.input_shape, compile_s, 1e3 * float(np.median(times)), macs)


def notebook_scale_models() -> list[str]:
    """Registered models whose default input is at most 64x64: the ones notebooks train on a CPU."""
    return sorted(n for n, s in models.REGISTRY.items() if s.input_shape[0] <= 64)
