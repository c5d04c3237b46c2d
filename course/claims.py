"""Claims over seeds with a stated error rate: "A beats B", "A and B do not differ", "A exceeds a threshold".

A lesson compares runs, and runs vary with the seed (and with the CPU: ../README.md, "Writing or changing a
notebook"). A claim is therefore a statement about the *mean over seeds*, tested on the few seeds a notebook can
afford, and every claim here is read off one confidence interval of a difference of means:

* **A beats B** (:func:`beats`): the lower end of the two-sided ``CONFIDENCE`` (98%) interval of
  ``mean(A) - scale * mean(B)`` lies above ``by`` (0 unless stated). Where A and B do not differ, a seed set
  passes this by chance with probability at most (1 - CONFIDENCE) / 2 = **1%**.
* **A and B do not differ** (:func:`equivalent`): the whole interval lies inside ``(-delta, +delta)``, a bound the
  text states (an equivalence test, TOST: two one-sided tests at 1% each). Where the true difference is ``delta``
  or more, a seed set passes by chance at most **1%** of the time. "Not significant" is never evidence of "no
  difference": an experiment too noisy to tell fails this test instead of passing it.
* **A exceeds a threshold** (:func:`exceeds`, :func:`below`): one sample, the same interval around ``mean(A)``.
* A ratio is claimed as a scaled difference (``a > 3 b`` is ``a - 3 b > 0``, with that combination's own standard
  error), never as a ratio of two noisy means with no spread.

The interval is Student's t: for independent arms, Welch's (unequal variances, Welch-Satterthwaite degrees of
freedom); for runs paired by seed (the same network before and after, the same seed's data), the one-sample t on the
per-seed differences (``paired=True``), ``n - 1`` degrees of freedom. Why t and not a bootstrap: a notebook has 3 to
5 seeds per arm, and a bootstrap over 3 values resamples only 10 distinct sets; its percentile interval is far too
narrow (it ignores that the sd itself is estimated from 3 values), so its real error rate is several times the one
it states. The t interval is exact for normal noise at any n and close to it for the bounded, roughly symmetric
spread of accuracies over seeds; ``tests/test_claims.py`` measures both error rates over 10,000 simulated seed sets.
With independent arms, positive correlation between them (a shared data split) only makes Welch's test more
conservative.

Each claim prints one line with its interval, e.g.
``claim  ResNet-14 − plain-14, training accuracy: +0.178 ± 0.060 > 0 (98%, Welch t, 3 v 3 seeds): holds``
(the interval is ``estimate ± half-width``, printed so that tests/nbval_tolerance.py reads the half-width as the
number's spread), and raises :class:`ClaimError` (an ``AssertionError``) when it does not hold.

For a seed sweep (``make seeds``): when the environment variable ``COURSE_CLAIMS_LOG`` names a file, every claim
appends one JSON line to it (text, kind, estimate, interval, outcome); with ``COURSE_CLAIMS_KEEP_GOING=1`` a claim
that fails prints ``FAILS`` and the notebook goes on, so that one run records every claim (the sweep itself then
fails: ``tools/seed_sweep.py``).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Sequence

import numpy as np
from scipy import stats

from course.seeds import Spread

CONFIDENCE = 0.98  # two-sided; each one-sided test (beats, either side of equivalent) errs at most 1%
LOG_ENV = "COURSE_CLAIMS_LOG"
KEEP_GOING_ENV = "COURSE_CLAIMS_KEEP_GOING"


class ClaimError(AssertionError):
    """A claim the text makes does not hold at this seed set."""


@dataclasses.dataclass(frozen=True)
class Interval:
    """A two-sided ``confidence`` interval ``estimate ± half`` of a mean or of a difference of means."""

    estimate: float
    half: float
    confidence: float
    df: float
    method: str  # "Welch t, 3 v 3 seeds", "paired t, 5 seeds", "t, 3 seeds"

    @property
    def low(self) -> float:
        return self.estimate - self.half

    @property
    def high(self) -> float:
        return self.estimate + self.half

    def __format__(self, spec: str) -> str:
        spec = spec or "+.3f"
        return f"{self.estimate:{spec}} ± {self.half:{spec.lstrip('+ ')}}"


def _values(x: Spread | Sequence[float]) -> np.ndarray:
    v = np.asarray(x.values if isinstance(x, Spread) else x, dtype=float)
    if v.ndim != 1 or len(v) < 2:
        raise ValueError(f"a claim needs at least 2 seeds per arm (one value per seed), got {v.shape}")
    return v


def _t_half(se: float, df: float, confidence: float) -> float:
    return 0.0 if se == 0 else float(stats.t.ppf(0.5 + confidence / 2, df)) * se


def mean_interval(a: Spread | Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """The t interval of the mean over seeds of one measurement: ``mean ± t(n-1) sd / sqrt(n)``."""
    v = _values(a)
    se = float(v.std(ddof=1)) / math.sqrt(len(v))
    return Interval(float(v.mean()), _t_half(se, len(v) - 1, confidence), confidence, len(v) - 1,
                    f"t, {len(v)} seeds")


def difference(a: Spread | Sequence[float], b: Spread | Sequence[float], *, scale: float = 1.0,
               paired: bool = False, confidence: float = CONFIDENCE) -> Interval:
    """The t interval of ``mean(a) - scale * mean(b)``: Welch's for independent arms, or, with ``paired=True``,
    the one-sample interval of the per-seed differences ``a_i - scale * b_i`` (same seeds, same order)."""
    va, vb = _values(a), _values(b)
    if paired:
        if len(va) != len(vb):
            raise ValueError(f"paired claims need the same seeds in both arms, got {len(va)} and {len(vb)} values")
        iv = mean_interval(va - scale * vb, confidence)
        return dataclasses.replace(iv, method=f"paired t, {len(va)} seeds")
    qa, qb = va.var(ddof=1) / len(va), scale ** 2 * vb.var(ddof=1) / len(vb)  # squared standard errors
    se = math.sqrt(qa + qb)
    df = (qa + qb) ** 2 / (qa ** 2 / (len(va) - 1) + qb ** 2 / (len(vb) - 1)) if se > 0 else math.inf
    return Interval(float(va.mean() - scale * vb.mean()), _t_half(se, df, confidence), confidence, df,
                    f"Welch t, {len(va)} v {len(vb)} seeds")


def relation(kind: str, bound: float) -> str:
    """What a claim of ``kind`` says of its interval, as printed after it: " > 0", " within ±0.05", "" (a report)."""
    return {"beats": f" > {bound:g}", "exceeds": f" > {bound:g}", "below": f" < {bound:g}",
            "equivalent": f" within ±{bound:g}", "report": ""}[kind]


def value_format(method: str) -> str:
    """How an interval of ``method`` prints: a mean (``"t, 3 seeds"``) unsigned, a difference signed."""
    return ".3f" if method.startswith("t,") else "+.3f"


@dataclasses.dataclass(frozen=True)
class Claim:
    """One tested statement: its text, the interval it was read from, the bound, and whether it holds."""

    text: str
    kind: str  # "beats", "equivalent", "exceeds", "below", "report"
    interval: Interval
    bound: float
    holds: bool | None  # None for a report, which claims nothing

    def line(self) -> str:
        iv = self.interval
        head = "interval" if self.kind == "report" else "claim"
        tail = "" if self.holds is None else (": holds" if self.holds else ": FAILS")
        value = format(iv, value_format(iv.method))
        return f"{head}  {self.text}: {value}{relation(self.kind, self.bound)} ({iv.confidence:.0%}, {iv.method}){tail}"

    def _ipython_display_(self) -> None:
        """Show nothing in a notebook: the claim printed its line when it was made (a cell ending in a claim would
        otherwise add the dataclass's repr, full-precision floats and all, to its outputs)."""

    def record(self) -> dict:
        iv = self.interval
        return {"claim": self.text, "kind": self.kind, "estimate": iv.estimate, "low": iv.low, "high": iv.high,
                "bound": self.bound, "confidence": iv.confidence, "method": iv.method, "holds": self.holds}


def _settle(claim: Claim) -> Claim:
    print(claim.line())
    path = os.environ.get(LOG_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(claim.record()) + "\n")
    if claim.holds is False and os.environ.get(KEEP_GOING_ENV) != "1":
        iv = claim.interval
        raise ClaimError(f"{claim.text}: the {iv.confidence:.0%} interval [{iv.low:+.4g}, {iv.high:+.4g}] does not "
                         f"support the claim ({claim.kind}, bound {claim.bound:g}) at this seed set")
    return claim


def beats(a, b, text: str, *, by: float = 0.0, scale: float = 1.0, paired: bool = False,
          confidence: float = CONFIDENCE) -> Claim:
    """Claim ``mean(a) - scale * mean(b) > by``: holds when the interval's lower end is above ``by``. A false claim
    passes at most (1 - confidence) / 2 of seed sets (1% at the default)."""
    iv = difference(a, b, scale=scale, paired=paired, confidence=confidence)
    return _settle(Claim(text, "beats", iv, by, bool(iv.low > by)))


def equivalent(a, b, text: str, *, delta: float, paired: bool = False, confidence: float = CONFIDENCE) -> Claim:
    """Claim ``|mean(a) - mean(b)| < delta``: holds when the whole interval lies inside ``(-delta, delta)`` (TOST).
    Where the true difference is ``delta`` or more, it passes at most (1 - confidence) / 2 of seed sets."""
    if delta <= 0:
        raise ValueError(f"delta must be > 0, not {delta}")
    iv = difference(a, b, paired=paired, confidence=confidence)
    return _settle(Claim(text, "equivalent", iv, delta, bool(-delta < iv.low and iv.high < delta)))


def exceeds(a, threshold: float, text: str, *, confidence: float = CONFIDENCE) -> Claim:
    """Claim ``mean(a) > threshold``: the lower end of the mean's interval is above it."""
    iv = mean_interval(a, confidence)
    return _settle(Claim(text, "exceeds", iv, float(threshold), bool(iv.low > threshold)))


def below(a, threshold: float, text: str, *, confidence: float = CONFIDENCE) -> Claim:
    """Claim ``mean(a) < threshold``: the upper end of the mean's interval is below it."""
    iv = mean_interval(a, confidence)
    return _settle(Claim(text, "below", iv, float(threshold), bool(iv.high < threshold)))


def report(a, b=None, text: str = "", *, scale: float = 1.0, paired: bool = False,
           confidence: float = CONFIDENCE) -> Claim:
    """Print (and log) the interval of ``mean(a)`` or of ``mean(a) - scale * mean(b)`` and claim nothing: for an
    effect the text calls not established at this scale."""
    iv = mean_interval(a, confidence) if b is None else difference(a, b, scale=scale, paired=paired,
                                                                   confidence=confidence)
    return _settle(Claim(text, "report", iv, 0.0, None))
