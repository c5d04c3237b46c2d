"""Throughput of a model's full train step, its counted FLOPs, and the fraction of the device's peak reached.

The step is the course's ordinary :func:`course.training.train_step` (forward, backward, Adam update and
BatchNorm statistics in one jitted program); on an accelerator the model's and optimizer's buffers are donated
(updated in place), on the CPU, where XLA cannot reuse them, they are not. Work per step is counted, not
guessed: a train step costs about 3x the forward pass's FLOPs (the backward pass computes a gradient for the
inputs and one for the weights of every layer; Kaplan et al. 2020, Sec. 2.1), with forward FLOPs = 2 x the MACs
that :mod:`course.counting` finds. Timings are medians after one compile; they are figures to print, never
something a test asserts.
"""
from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from course import counting, models, precision, training

# Dense peak TFLOP/s from the vendors' data sheets (without structured sparsity), for the achieved-vs-peak figure.
PEAK_TFLOPS = {
    ("H100", "bfloat16"): 989.0, ("H100", "float32"): 67.0,   # H100 SXM: bf16 tensor core; fp32 without TF32
    ("H200", "bfloat16"): 989.0, ("H200", "float32"): 67.0,
    ("A100", "bfloat16"): 312.0, ("A100", "float32"): 19.5,
}


def device_peak_tflops(dtype: str, device=None) -> float | None:
    """The data-sheet peak of ``device`` for ``dtype``, or None where the course does not know it (e.g. CPUs:
    use :func:`measured_matmul_tflops` as the reference there)."""
    kind = (device or jax.devices()[0]).device_kind
    return next((v for (name, dt), v in PEAK_TFLOPS.items() if name in kind and dt == dtype), None)


def measured_matmul_tflops(n: int = 1024, dtype: str = "float32", repeats: int = 5) -> float:
    """TFLOP/s of one large square matrix product on the default device: a practical ceiling to compare with."""
    a = jnp.ones((n, n), precision.DTYPES[dtype])
    f = jax.jit(lambda a: a @ a)
    jax.block_until_ready(f(a))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(a))
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / float(np.median(times)) / 1e12


@dataclasses.dataclass
class BenchResult:
    model: str
    batch: int
    input_shape: tuple[int, int, int]
    dtype: str
    compile_s: float
    step_ms: float
    macs_per_example: int
    peak_tflops: float | None = None

    @property
    def images_per_s(self) -> float:
        return self.batch / (self.step_ms / 1e3)

    @property
    def tflops(self) -> float:
        """Achieved TFLOP/s: 3 x forward FLOPs (= 2 x MACs) per example, times examples per second."""
        return 3 * 2 * self.macs_per_example * self.images_per_s / 1e12

    @property
    def peak_fraction(self) -> float | None:
        return None if self.peak_tflops is None else self.tflops / self.peak_tflops

    def __str__(self) -> str:
        shape = "x".join(map(str, self.input_shape))
        peak = "" if self.peak_fraction is None else f"  {100 * self.peak_fraction:5.1f}% of peak"
        return (f"{self.model:<16} {shape:>9} {self.dtype:>8} batch {self.batch:>4}  compile {self.compile_s:5.1f} s"
                f"  step {self.step_ms:8.1f} ms  {self.images_per_s:9.0f} img/s  {self.tflops:8.4f} TFLOP/s{peak}")


def bench_train_step(name: str, batch: int | None = None, steps: int = 10, seed: int = 0,
                     dtype: str = "float32", input_shape: tuple[int, int, int] | None = None) -> BenchResult:
    """Compile and time ``steps`` train steps of registered model ``name`` on random data."""
    spec = models.get_spec(name)
    batch = batch or spec.bench_batch
    shape = tuple(input_shape or spec.input_shape)
    model = models.build(name, seed=seed, input_shape=shape)
    macs = counting.count(model, shape, name).macs
    opt = training.make_optimizer(model, 1e-3)
    loss_fn = precision.mixed_precision(getattr(model, "loss_fn", training.cross_entropy), dtype)
    step = training.train_step if jax.default_backend() == "cpu" else training.train_step_donated
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((batch, *shape)), jnp.float32)
    y = jnp.asarray(rng.integers(0, spec.num_classes, batch), jnp.int32)
    model.train()
    t0 = time.perf_counter()
    jax.block_until_ready(step(model, opt, x, y, loss_fn))
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        jax.block_until_ready(step(model, opt, x, y, loss_fn))
        times.append(time.perf_counter() - t0)
    return BenchResult(name, batch, shape, dtype, compile_s, 1e3 * float(np.median(times)), macs,
                       device_peak_tflops(dtype))


def notebook_scale_models() -> list[str]:
    """Registered models whose default input is at most 64x64: the ones notebooks train on a CPU."""
    return sorted(n for n, s in models.REGISTRY.items() if s.input_shape[0] <= 64)
