"""The parameters a user sets: a notebook's ``SCALE`` and ``SEED`` (its papermill parameters cell), the command
line's ``--scale`` and ``--seed``. Each is checked where it enters, so a value that does not exist stops at once
with one line saying what is allowed, not minutes later deep inside numpy (``SEED = -1``) or at a bare
``KeyError: 'huge'`` (``{...}[SCALE]``).

Every notebook calls ``course.check_parameters(SCALE, SEED)`` right after ``course.configure()``.
"""
from __future__ import annotations

import numbers

SCALES = ("small", "full")  # every notebook's configurations and the train command's (course.train_command.SCALES)
MAX_SEED = 2 ** 32 - 1  # a notebook runs seeds(SEED, n) = SEED*n ..; jax keys take up to 2**63 - 1


class ParameterError(ValueError):
    """A parameter outside what is allowed. In a notebook it shows as its one-line message, no traceback."""

    def _render_traceback_(self) -> list[str]:  # IPython's hook: how this exception is displayed in a cell
        return [f"{type(self).__name__}: {self}"]


def check_seed(seed, name: str = "SEED", where: str = "") -> int:
    """``seed`` if it is a whole number from 0 to :data:`MAX_SEED`, else a :class:`ParameterError` naming ``name``
    (and ``where`` to set it)."""
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise ParameterError(f"{name} must be a whole number from 0 to {MAX_SEED:,}, not {seed!r}{where}")
    return int(seed)


def check_scale(scale, name: str = "SCALE", where: str = "") -> str:
    """``scale`` if it is one of :data:`SCALES`, else a :class:`ParameterError` listing them."""
    if scale not in SCALES:
        raise ParameterError(f"{name} must be one of {', '.join(map(repr, SCALES))}, not {scale!r}{where}")
    return scale


def check_parameters(SCALE, SEED) -> None:  # noqa: N803 (the notebooks' own names)
    """Check a notebook's parameters cell: ``SCALE`` one of :data:`SCALES`, ``SEED`` a whole number >= 0."""
    where = " (set it in the notebook's parameters cell, or papermill -p {} ...)"
    check_scale(SCALE, "SCALE", where.format("SCALE"))
    check_seed(SEED, "SEED", where.format("SEED"))
