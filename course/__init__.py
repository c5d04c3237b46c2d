"""Why modern CNN architectures look the way they do: the library behind the course notebooks.

Importing ``course`` sets two JAX options that make a laptop CPU pleasant to teach on:

* ``jax_default_prng_impl = "philox4x32"``: model initializers compile faster than with the default
  threefry generator (on a 2-core CPU: 4.6 s instead of 7 s to build a mini-GoogLeNet). It changes the
  random numbers, not their distribution. Set ``COURSE_KEEP_PRNG=1`` to keep JAX's default.
* a persistent compilation cache (``$COURSE_CACHE_DIR/jax``, default ``~/.cache/cnn-course/jax``), so a
  notebook run a second time skips most XLA compiles. It never changes a result, only how long it takes.
"""
from __future__ import annotations

import os
from pathlib import Path

import jax

__version__ = "0.1.0"


def cache_dir() -> Path:
    """Where the course keeps caches (compiled XLA programs, features, trained extractors)."""
    return Path(os.environ.get("COURSE_CACHE_DIR", Path.home() / ".cache" / "cnn-course"))


if not os.environ.get("COURSE_KEEP_PRNG"):
    jax.config.update("jax_default_prng_impl", "philox4x32")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    jax.config.update("jax_compilation_cache_dir", str(cache_dir() / "jax"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
