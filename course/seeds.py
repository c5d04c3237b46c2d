"""Results over several seeds: which seeds a notebook runs, and ``mean ± spread`` summaries of what they measure.

A training run's printed digits are not a reproducible result: they change between CPUs, and a few epochs amplify
a last-bit difference into a different run (../README.md, "Writing a notebook"). A lesson is a comparison that
holds over seeds, so every notebook runs its experiments at ``seeds(SEED, n)`` and prints ``mean ± spread``,
which the tolerance-aware nbval comparison (tests/nbval_tolerance.py, ``"spread"``) checks against the spread the
notebook itself printed.

Speed (2-core CPU, small_cnn on digits, 3 seeds x 3 epochs, batch 64): a Python loop over one compiled pure step
(what :func:`course.training.fit` runs) 2.3 s; the same step ``vmap``-ed over the 3 seeds 10.2 s, because
batching the parameters turns every convolution into a grouped one, which XLA's CPU backend runs slowly. So
:func:`over_seeds` loops, and each run reuses the step compiled by the first.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import numpy as np

from course.parameters import check_seed


def seeds(seed: int, n: int = 3) -> list[int]:
    """The ``n`` seeds a notebook with parameter ``SEED = seed`` runs: ``seed*n .. seed*n + n-1``. Different
    ``SEED`` values give disjoint sets, so re-running a notebook at another ``SEED`` repeats no run."""
    check_seed(seed, "SEED")
    if n < 1:
        raise ValueError(f"n must be at least 1, not {n}")
    return list(range(seed * n, seed * n + n))


@dataclasses.dataclass(frozen=True)
class Spread:
    """Values of one measurement over seeds. ``f"{s:.3f}"`` prints ``mean ± sd`` (sample standard deviation)."""

    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def sd(self) -> float:
        """Sample standard deviation (ddof=1); 0 for a single value."""
        return float(np.std(self.values, ddof=1)) if len(self.values) > 1 else 0.0

    def __format__(self, spec: str) -> str:
        spec = spec or ".3f"
        return f"{self.mean:{spec}} ± {self.sd:{spec.lstrip('+ ')}}"  # a sign for the mean only: "+0.004 ± 0.007"

    def __str__(self) -> str:
        return format(self)


def over_seeds(run: Callable[[int], float | Mapping[str, float]], seeds: list[int]) -> dict[str, Spread] | Spread:
    """Call ``run(seed)`` for each seed. ``run`` returns a number (-> one :class:`Spread`) or a mapping of named
    numbers (-> a dict of :class:`Spread`, one per name)."""
    results = [run(s) for s in seeds]
    if isinstance(results[0], Mapping):
        return {k: Spread(tuple(float(r[k]) for r in results)) for k in results[0]}
    return Spread(tuple(float(r) for r in results))


def stack(curves) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample standard deviation over seeds (axis 0) of one array per seed, e.g. one curve per seed:
    ``(seeds, E) -> (mean (E,), sd (E,))``; any trailing shape works (``(seeds, T, T)`` accuracy matrices). With a
    single seed the sd is 0."""
    a = np.asarray(curves, dtype=float)  # (seeds, ...)
    return a.mean(0), (a.std(0, ddof=1) if len(a) > 1 else np.zeros(a.shape[1:]))


def margin_holds(a: Spread, b: Spread) -> bool:
    """True when ``a``'s mean exceeds ``b``'s by more than the larger of their spreads. Kept to show what it gets
    wrong: with 3 seeds a null effect passes it 10.6% of the time. A lesson's claims use :mod:`course.claims`."""
    return a.mean - b.mean > max(a.sd, b.sd)
