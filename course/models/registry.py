"""Every model the course defines, by name, with the input it is meant for.

Model families register themselves with :func:`register`; ``python -m course count NAME`` and the benchmark
look names up here, so a new family only needs a ``@register`` line and an import in ``course.models``.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from flax import nnx


class UnknownModelError(KeyError):
    """A model name the course does not define; the message lists the known names."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return self.args[0]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """``build(num_classes=..., input_shape=..., rngs=...)`` makes the model; ``input_shape`` is the default
    (H, W, C) of one example (a model with a global pool accepts other sizes too). ``loss`` is the training loss
    generic code (the train command, the benchmark) uses, with ``course.training``'s loss signature
    ``loss(model, x, y, params) -> (loss, logits)``; None means plain cross-entropy on the model's output."""

    name: str
    build: Callable[..., nnx.Module]
    input_shape: tuple[int, int, int]
    num_classes: int
    description: str
    bench_batch: int = 64  # batch size of the notebook-scale benchmark
    loss: Callable | None = None


REGISTRY: dict[str, ModelSpec] = {}


def register(name: str, input_shape: tuple[int, int, int], num_classes: int, description: str,
             bench_batch: int = 64, loss: Callable | None = None) -> Callable:
    """Decorator: register a builder ``fn(num_classes, input_shape, *, rngs) -> nnx.Module`` under ``name``,
    trained with ``loss`` (None: cross-entropy)."""
    def deco(fn):
        if name in REGISTRY:
            raise ValueError(f"model name {name!r} registered twice")
        REGISTRY[name] = ModelSpec(name, fn, input_shape, num_classes, description, bench_batch, loss)
        return fn
    return deco


def get_spec(name: str) -> ModelSpec:
    if name not in REGISTRY:
        raise UnknownModelError(f"unknown model {name!r}; known models: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def build(name: str, *, seed: int = 0, num_classes: int | None = None,
          input_shape: tuple[int, int, int] | None = None, abstract: bool = False) -> nnx.Module:
    """Build model ``name``. ``abstract=True`` returns it with shape-only parameters (instant, for counting)."""
    spec = get_spec(name)
    n = spec.num_classes if num_classes is None else num_classes
    shape = tuple(input_shape or spec.input_shape)
    make = lambda: spec.build(num_classes=n, input_shape=shape, rngs=nnx.Rngs(seed))  # noqa: E731
    return nnx.eval_shape(make) if abstract else make()
