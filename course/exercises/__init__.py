"""Exercises that answer back: the check a student runs under an exercise, and the record a grader reads.

Each exercise of a notebook has an id, ``"NN.k"`` (notebook NN, exercise k), the names of the variables its prompt
asks the student to store, and a check: a function of those answers that returns ``None`` when they are right and a
hint otherwise (what is wrong, never the answer). The checks of notebook NN live in ``course/exercises/nbNN.py``::

    @exercise("02.1", "weights_reduced", "macs_reduced")
    def _(weights_reduced, macs_reduced):
        return count_hint("macs_reduced", macs_reduced, 23_382_016, {196: "did you multiply by the positions twice?"})

and the notebook's check cell calls ``check("02.1")``, which reads the answers from the notebook's globals and
prints a pass or the hint. In a notebook the printed line carries the result in its output metadata
(``metadata["course_check"]``), which is what ``tools/grading.py`` collects from an executed submission.

An answer that is missing (or still ``None``, as in the student copy) fails with a hint naming the variables to
fill in; a check that raises on a student's answer (a function that returns the wrong type, say) fails with the
error, never stops the notebook.
"""
from __future__ import annotations

import importlib
import inspect
import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

METADATA_KEY = "course_check"  # where a check cell's output carries its result (tools/grading.py reads it)


class UnknownExercise(KeyError):
    """An exercise id that no check is registered for; the message lists the notebook's known ids."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class Exercise:
    id: str                               # "02.1"
    answers: tuple[str, ...]              # the variables the prompt asks for, in the prompt's order
    check: Callable[..., str | None]      # answers (and inputs) by name -> None (right) or a hint
    inputs: tuple[str, ...] = ()          # notebook variables the check reads besides the answers (e.g. the data)


@dataclass(frozen=True)
class Result:
    id: str
    passed: bool
    hint: str = ""                        # why it failed; empty when it passed

    def message(self) -> str:
        return f"✓ exercise {self.id}: passed" if self.passed else f"✗ exercise {self.id}: {self.hint}"

    def record(self) -> dict:
        return {"id": self.id, "passed": self.passed, "hint": self.hint}


_REGISTRY: dict[str, Exercise] = {}


def exercise(exercise_id: str, *answers: str, inputs: tuple[str, ...] = ()):
    """Register the decorated function as the check of ``exercise_id``, reading the variables ``answers``."""
    if not answers:
        raise ValueError(f"exercise {exercise_id} must name the variables its prompt asks for")

    def register(fn: Callable[..., str | None]) -> Callable[..., str | None]:
        if exercise_id in _REGISTRY:
            raise ValueError(f"exercise {exercise_id} is registered twice")
        _REGISTRY[exercise_id] = Exercise(exercise_id, tuple(answers), fn, tuple(inputs))
        return fn
    return register


def _notebook_of(exercise_id: str) -> str:
    number = exercise_id.split(".")[0]
    if not (len(number) == 2 and number.isdigit() and exercise_id.count(".") == 1):
        raise UnknownExercise(f"{exercise_id!r} is not an exercise id: ids look like '02.1' (notebook 02, exercise 1)")
    return number


def exercises_of(number: str) -> list[Exercise]:
    """The checked exercises of notebook ``number`` ("02"), in order; empty if it has none yet."""
    try:
        importlib.import_module(f"course.exercises.nb{number}")
    except ModuleNotFoundError as e:
        if e.name != f"course.exercises.nb{number}":
            raise
        return []
    return sorted((e for e in _REGISTRY.values() if e.id.startswith(f"{number}.")),
                  key=lambda e: int(e.id.split(".")[1]))


def get(exercise_id: str) -> Exercise:
    number = _notebook_of(exercise_id)
    known = exercises_of(number)
    if exercise_id not in _REGISTRY:
        ids = ", ".join(e.id for e in known) or "none"
        raise UnknownExercise(f"no check for exercise {exercise_id!r}; notebook {number}'s checked exercises: {ids}")
    return _REGISTRY[exercise_id]


def evaluate(exercise_id: str, namespace: Mapping) -> Result:
    """Check the answers to ``exercise_id`` found in ``namespace``; never raises for a wrong or missing answer."""
    ex = get(exercise_id)
    missing = [n for n in ex.answers if namespace.get(n) is None]
    if missing:
        names = ", ".join(f"`{n}`" for n in missing)
        return Result(ex.id, False, f"not answered yet: store your answer in {names} (see the prompt), "
                                    f"run that cell, then this check")
    absent = [n for n in ex.inputs if n not in namespace]
    if absent:
        return Result(ex.id, False, f"run the notebook from the top first: this check reads {', '.join(absent)}")
    values = {n: namespace[n] for n in ex.answers + ex.inputs}
    try:
        hint = ex.check(**values)
    except Exception as e:  # the student's function raised, or returned something the check cannot read
        return Result(ex.id, False, f"checking your answer raised {type(e).__name__}: {e}")
    return Result(ex.id, hint is None, hint or "")


def check(exercise_id: str, namespace: Mapping | None = None) -> None:
    """Print whether the answers to ``exercise_id`` (read from the caller's globals, or ``namespace``) pass, with
    a hint if not. In a notebook the line carries the result for grading in its output metadata."""
    if namespace is None:
        namespace = inspect.currentframe().f_back.f_globals
    result = evaluate(exercise_id, namespace)
    show(result)


def show(result: Result) -> None:
    if "IPython" in sys.modules:
        from IPython import get_ipython
        if get_ipython() is not None:
            from IPython.display import display
            display({"text/plain": result.message()}, raw=True, metadata={METADATA_KEY: result.record()})
            return
    print(result.message())


# ----------------------------------------------------------------------------------------------------------
# Hints for the kinds of answer the exercises ask for
@dataclass(frozen=True)
class Mistakes:
    """Known wrong answers and what each one means: ``ratios`` maps got/expected to a hint, ``values`` maps a
    wrong value itself to a hint."""
    ratios: Mapping[float, str] = field(default_factory=dict)
    values: Mapping[object, str] = field(default_factory=dict)


def is_number(x) -> bool:
    """A finite int or float (not a bool or a string)."""
    try:
        return math.isfinite(float(x)) and not isinstance(x, (str, bytes, bool))
    except (TypeError, ValueError):
        return False


def _ratio(x: float) -> str:
    return f"{x:.3g}x too large" if x > 1 else f"{1 / x:.3g}x too small"


def count_hint(name: str, got, want: float, mistakes: Mistakes = Mistakes(), rel: float = 0.0) -> str | None:
    """None if ``got`` equals ``want`` (within ``rel``); else a hint: a known mistake's, or how far off it is."""
    if not is_number(got):
        return f"`{name}` should be a number, got {type(got).__name__}"
    got = float(got)
    if abs(got - want) <= rel * abs(want):
        return None
    for value, hint in mistakes.values.items():
        if got == value:
            return f"`{name}` is not right: {hint}"
    if got == 0 or want == 0:
        return f"`{name}` is not right" + (": it should not be 0" if got == 0 else "")
    r = got / want
    for ratio, hint in mistakes.ratios.items():
        if abs(r - ratio) <= 1e-3 * ratio:
            return f"`{name}` is {_ratio(r)}: {hint}"
    return f"`{name}` is {_ratio(r)}" if r > 0 else f"`{name}` has the wrong sign"


def first_hint(*hints: str | None) -> str | None:
    """The first hint that is not None: check several answers and report the first one that is wrong."""
    return next((h for h in hints if h is not None), None)


def mapping_hint(name: str, got, keys) -> str | None:
    """None if ``got`` is a mapping with exactly ``keys``; else what is missing or extra."""
    if not isinstance(got, Mapping):
        return f"`{name}` should be a dict with keys {list(keys)}, got {type(got).__name__}"
    missing, extra = [k for k in keys if k not in got], [k for k in got if k not in keys]
    if missing or extra:
        return (f"`{name}` should have the keys {list(keys)}"
                + (f"; missing {missing}" if missing else "") + (f"; unexpected {extra}" if extra else ""))
    return None


def curve_hint(name: str, got, n_points: int, lo: float = 0.0, hi: float = 1.0) -> str | None:
    """None if ``got`` is a sequence of ``n_points`` numbers in [lo, hi] (an accuracy curve, say); else a hint."""
    try:
        values = [float(v) for v in got]
    except (TypeError, ValueError):
        return f"`{name}` should be a list of {n_points} numbers"
    if len(values) != n_points:
        return f"`{name}` has {len(values)} points: it should have one per setting, {n_points}"
    bad = [v for v in values if not lo <= v <= hi]
    if bad:
        return f"`{name}` should lie in [{lo:g}, {hi:g}] (accuracies are fractions, not percentages); found {bad[0]:.4g}"
    return None
