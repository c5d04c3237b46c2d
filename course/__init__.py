"""Why modern CNN architectures look the way they do: the library behind the course notebooks.

Importing ``course`` sets nothing global. Programs that want the course's JAX options (a faster-compiling PRNG
and a persistent compilation cache) call :func:`course.configure` first; see :mod:`course.jax_config`.
"""
from __future__ import annotations

from course.jax_config import cache_dir, configure
from course.parameters import check_parameters

__version__ = "0.1.0"
__all__ = ["cache_dir", "check_parameters", "configure"]
