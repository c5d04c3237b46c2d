"""Notebook 07 (training at scale): a throughput sweep that stays honest on a busy machine.

A step's time is modelled as ``fixed + per_example x batch``: the fixed part (launching the compiled program, the
optimizer touching every weight once) is paid per step however many examples it carries, the rest per example.
Timings on a shared machine are noisy and only ever *slower* than the machine can go, so each batch size is timed
in several rounds and the fastest round kept (the convention of Python's ``timeit``: the minimum is the best
estimate of what the machine can do, the others measure the interference), and the line is fitted with both
coefficients constrained to be non-negative (a negative fixed cost means noise, not a machine that pays you per
step). The summary sentence is written from the data, whatever it shows.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from scipy.optimize import nnls

from course import bench


def throughput_sweep(name: str, batches: Sequence[int], steps: int = 5, repeats: int = 3,
                     **kwargs) -> list[bench.BenchResult]:
    """:func:`course.bench.bench_train_step` of model ``name`` at every batch size, ``repeats`` rounds each
    (the median step of each round), keeping for each batch the round with the fastest median step."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1 (got {repeats})")
    return [min((bench.bench_train_step(name, batch=b, steps=steps, **kwargs) for _ in range(repeats)),
                key=lambda r: r.step_ms) for b in batches]


def fixed_cost_fit(batches: Sequence[int], step_ms: Sequence[float]) -> tuple[float, float]:
    """``step_ms ~ fixed_ms + per_example_ms x batch`` with both coefficients >= 0 (``scipy.optimize.nnls``),
    least squares in *relative* error (each row divided by its step time), so that the small batches, which carry
    the fixed cost, weigh as much as the large ones; returns ``(fixed_ms, per_example_ms)``."""
    b, t = np.asarray(batches, float), np.asarray(step_ms, float)
    if len(b) < 2 or len(set(b)) < 2:
        raise ValueError(f"the fit needs at least two different batch sizes (got {list(batches)})")
    if np.any(t <= 0):
        raise ValueError(f"step times must be positive (got {list(step_ms)})")
    (fixed, per_example), _ = nnls(np.stack([np.ones_like(b), b], axis=1) / t[:, None], np.ones_like(t))
    return float(fixed), float(per_example)


def describe_throughput(results: Sequence[bench.BenchResult], level: float = 0.9) -> str:
    """One sentence read off the sweep: how much faster the best batch is than the smallest, and the smallest
    batch that reaches ``level`` of the best throughput (where the curve levels off)."""
    first, best = results[0], max(results, key=lambda r: r.images_per_s)
    if best is first:
        return (f"the smallest batch, {first.batch}, is already the fastest ({first.images_per_s:,.0f} images/s): "
                f"on this device the fixed cost per step is negligible beside the work per example")
    near = next(r for r in results if r.images_per_s >= level * best.images_per_s)
    text = (f"batch {best.batch} carries {best.images_per_s / first.images_per_s:.1f}x the images per second of "
            f"batch {first.batch}; batch {near.batch} is the first within {1 - level:.0%} of the best")
    last = results[-1]
    if last.images_per_s < level * best.images_per_s:
        text += f", and batch {last.batch} falls back to {last.images_per_s / best.images_per_s:.0%} of it"
    return text


def plot_throughput(results: Sequence[bench.BenchResult], fit: tuple[float, float], host_ms: float,
                    figsize: tuple[float, float] = (10, 3.6)) -> Figure:
    """Left: images/s against the batch (log x, y from 0). Right: step time against the batch (log-log), the
    non-negative fit and the host overhead of a no-work step."""
    batches = np.array([r.batch for r in results], float)
    fixed, per_example = fit
    fig, (a, b) = plt.subplots(1, 2, figsize=figsize)
    a.plot(batches, [r.images_per_s for r in results], marker="o")
    a.set(xscale="log", xlabel="batch size", ylabel="images / s", title=f"{results[0].model}: train step throughput")
    a.set_ylim(0, None)
    grid = np.geomspace(batches.min(), batches.max(), 50)
    b.plot(batches, [r.step_ms for r in results], "o", label="measured (best round's median)")
    b.plot(grid, fixed + per_example * grid, "--", color="C1",
           label=f"fit: {fixed:.2f} ms + batch x {1e3 * per_example:.0f} us")
    b.axhline(host_ms, color="C2", lw=1.2, ls=":", label=f"host overhead {host_ms:.2f} ms")
    b.set(xscale="log", yscale="log", xlabel="batch size", ylabel="ms per step",
          title="step time: a fixed cost plus work per example")
    b.legend(fontsize=9)
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


__all__ = ["throughput_sweep", "fixed_cost_fit", "describe_throughput", "plot_throughput"]
