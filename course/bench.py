"""Throughput of a model's full train step, its counted FLOPs, and the fraction of the device's peak reached.

The step is the one :func:`course.training.fit` runs, :data:`course.training.pure_train_step`: forward, backward,
Adam update and BatchNorm statistics in one program, ``jax.jit`` over the state of ``nnx.split`` (carried as a pytree
from step to step, merged back into the module only at the end), its buffers donated (updated in place). ``host_overhead_ms`` is the median time
of a step that takes and returns the same state the same way but does no work: what Python and dispatch cost per
step, which caps throughput when the device is fast. Work per step is counted, not
guessed: a train step costs about 3x the forward pass's FLOPs (the backward pass computes a gradient for the
inputs and one for the weights of every layer; Kaplan et al. 2020, Sec. 2.1), with forward FLOPs = 2 x the MACs
that :mod:`course.counting` finds. Timings are medians after one compile; they are figures to print, never
something a test asserts.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import TextIO

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from course import counting, models, precision, training

# Dense peak TFLOP/s from NVIDIA's data sheets (without structured sparsity), matched against jax's device_kind in
# this order (the PCIe H100 before the SXM one). float32 is the TF32 tensor-core peak: jax's default float32 matmul
# precision on these GPUs runs TF32, so the plain-fp32 figure (67 on an H100 SXM) would give fractions above 100%.
PEAK_TFLOPS = {
    "H100 PCIe": {"bfloat16": 756.0, "float32": 378.0},
    "H100 NVL": {"bfloat16": 835.0, "float32": 418.0},
    "H100": {"bfloat16": 989.0, "float32": 494.7},   # SXM5 ("NVIDIA H100 80GB HBM3")
    "H200": {"bfloat16": 989.0, "float32": 494.7},   # SXM (same tensor cores as the H100 SXM, more memory)
    "A100": {"bfloat16": 312.0, "float32": 156.0},
}


def device_peak_tflops(dtype: str, device=None) -> float | None:
    """The data-sheet peak of ``device`` for ``dtype``, or None where the course does not know it (e.g. CPUs:
    use :func:`measured_matmul_tflops` as the reference there)."""
    kind = (device or jax.devices()[0]).device_kind
    return next((peaks.get(dtype) for name, peaks in PEAK_TFLOPS.items() if name in kind), None)


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
    step_ms_iqr: float = 0.0         # spread of the timed steps: interquartile range
    host_overhead_ms: float = 0.0    # median of a no-work step with the same inputs and outputs
    device: str = ""

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
                f"  step {self.step_ms:8.2f} ms (IQR {self.step_ms_iqr:.2f})  host {self.host_overhead_ms:6.3f} ms"
                f"  {self.images_per_s:9.0f} img/s  {self.tflops:8.4f} TFLOP/s{peak}")

    def to_dict(self) -> dict:
        """The fields ``python -m course bench --json`` prints."""
        return {"model": self.model, "device": self.device, "dtype": self.dtype, "batch": self.batch,
                "input_shape": list(self.input_shape), "images_per_s": self.images_per_s, "step_ms": self.step_ms,
                "step_ms_iqr": self.step_ms_iqr, "host_overhead_ms": self.host_overhead_ms,
                "compile_s": self.compile_s, "macs_per_example": self.macs_per_example,
                "achieved_tflops": self.tflops, "peak_tflops": self.peak_tflops,
                "fraction_of_peak": self.peak_fraction}


def _median_ms(f, repeats: int) -> tuple[float, float]:
    """Median and interquartile range, in ms, of ``repeats`` timed calls of ``f`` (each waits for its result)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append(1e3 * (time.perf_counter() - t0))
    q1, med, q3 = np.percentile(times, [25, 50, 75])
    return float(med), float(q3 - q1)


@functools.partial(jax.jit, static_argnames=("static",), donate_argnames=("leaves",))
def _no_work_step(static, leaves, x, y):
    """Takes and returns what the real step does (static structure, donated leaves, batch), computes nothing."""
    return leaves, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32)


def bench_train_step(name: str, batch: int | None = None, steps: int = 20, seed: int = 0,
                     dtype: str = "float32", input_shape: tuple[int, int, int] | None = None,
                     progress: TextIO | None = None) -> BenchResult:
    """Compile and time ``steps`` train steps of registered model ``name`` on random data already on the device
    (so the host never limits the figure), and the host overhead of a no-work step. With ``progress`` (a text
    stream, e.g. ``sys.stderr``) what it is doing is written there while it builds, compiles and times."""
    if steps < 1 or (batch is not None and batch < 1):
        raise ValueError(f"steps and batch must be at least 1 (got steps={steps}, batch={batch})")
    spec = models.get_spec(name)
    shape = tuple(input_shape or spec.input_shape)
    batch = batch or spec.bench_batch
    _say(progress, f"{name}: building the model ({'x'.join(map(str, shape))}) and compiling its train step at "
                   f"batch {batch} ...")
    return bench_model(models.build(name, seed=seed, input_shape=shape), shape, spec.num_classes,
                       batch, steps, seed, dtype, spec.loss or training.cross_entropy, name, progress=progress)


def _say(stream: TextIO | None, text: str) -> None:
    if stream is not None:
        print(text, file=stream, flush=True)


def bench_model(model: nnx.Module, input_shape: tuple[int, int, int], num_classes: int, batch: int,
                steps: int = 20, seed: int = 0, dtype: str = "float32", loss=training.cross_entropy,
                name: str | None = None, host_overhead: bool = True, lr: float = 1e-3,
                progress: TextIO | None = None) -> BenchResult:
    """:func:`bench_train_step` for any model (one a notebook builds itself): the same step, timing and host
    overhead (``host_overhead=False`` skips it, and its compile: NaN). The model is trained in place by the timed
    steps (Adam at ``lr``, on random data; pass the ``lr`` a study trains with to reuse its compiled step).
    ``progress``: as in :func:`bench_train_step`."""
    if steps < 1 or batch < 1:
        raise ValueError(f"steps and batch must be at least 1 (got steps={steps}, batch={batch})")
    name = name or type(model).__name__
    shape = tuple(input_shape)
    macs = counting.count(model, shape, name).macs
    opt = training.make_optimizer(model, lr)
    loss_fn = precision.mixed_precision(loss, dtype)
    kx, ky = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (batch, *shape), jnp.float32)  # (B, H, W, C), generated on the device
    y = jax.random.randint(ky, (batch,), 0, num_classes, jnp.int32)
    model.train()
    static, leaves = training.split_state(model, opt)
    box = [leaves]

    def real():
        box[0], loss, _ = training.pure_train_step(static, box[0], x, y, None, loss_fn)
        jax.block_until_ready(loss)

    def idle():
        box[0], loss, _ = _no_work_step(static, box[0], x, y)
        jax.block_until_ready(loss)

    t0 = time.perf_counter()
    real()
    compile_s = time.perf_counter() - t0
    _say(progress, f"{name}: compiled in {compile_s:.1f} s; timing {steps} steps ...")
    step_ms, iqr = _median_ms(real, steps)
    host_ms = float("nan")
    if host_overhead:
        idle()  # compile the no-work step
        host_ms, _ = _median_ms(idle, max(steps, 20))
    training.merge_state((model, opt), static, box[0])
    device = jax.devices()[0]
    return BenchResult(name, batch, shape, dtype, compile_s, step_ms, macs, device_peak_tflops(dtype), iqr, host_ms,
                       f"{device.device_kind} ({device.platform})")


def notebook_scale_models() -> list[str]:
    """Registered models whose default input is at most 64x64: the ones notebooks train on a CPU."""
    return sorted(n for n, s in models.REGISTRY.items() if s.input_shape[0] <= 64)
