"""The two JAX options the course sets for a laptop CPU, applied only when a program asks for them.

Call :func:`configure` once, before any random key or model is made (every notebook does so in its imports
cell; ``python -m course`` and the test suite do so at start). Importing ``course`` changes nothing global.

* ``jax_default_prng_impl = "philox4x32"``: model initializers compile faster than with JAX's default threefry
  generator (on a 2-core CPU: 4.6 s instead of 7 s to build a mini-GoogLeNet). It changes the random numbers,
  not their distribution, so a program that calls ``configure()`` draws other numbers than JAX's documentation
  shows for the same key.
* a persistent compilation cache (``course.cache_dir() / "jax"`` unless ``JAX_COMPILATION_CACHE_DIR`` is set), so
  a notebook run a second time skips most XLA compiles. It never changes a result, only how long it takes.
"""
from __future__ import annotations

import os
from pathlib import Path

import jax


def cache_dir() -> Path:
    """Where the course keeps caches (compiled XLA programs, features, trained extractors)."""
    return Path(os.environ.get("COURSE_CACHE_DIR", Path.home() / ".cache" / "cnn-course"))


def configure(prng: str | None = "philox4x32", compilation_cache: bool = True) -> None:
    """Set the course's JAX options; ``prng=None`` keeps JAX's default generator, ``compilation_cache=False``
    compiles every program afresh. Safe to call more than once with the same arguments."""
    if prng is not None:
        jax.config.update("jax_default_prng_impl", prng)
    if compilation_cache:
        if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
            jax.config.update("jax_compilation_cache_dir", str(cache_dir() / "jax"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
