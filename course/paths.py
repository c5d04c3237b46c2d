"""One name for each array of a model: its path of attributes joined by "/", e.g. "inception3a/conv1x1/conv/kernel".

Counting tables (:mod:`course.counting`), gradient summaries (:func:`course.training.layer_grad_norms`), the
feature and extractor store (:mod:`course.features`) and the two-learning-rate optimizer
(:func:`course.transfer.finetune_tx`) all name arrays this way, through these functions. They read paths with
``nnx.to_flat_state`` and ``nnx.iter_modules``, or, inside optax (which sees plain pytrees), JAX key paths.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import jax
import numpy as np
from flax import nnx


def name(path: Iterable[Any]) -> str:
    """"a/0/kernel" for an nnx path ``("a", 0, "kernel")`` or a JAX key path (``DictKey``, ``SequenceKey``; a
    Variable's ``GetAttrKey("value")`` is not part of the name)."""
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path
                    if not isinstance(k, jax.tree_util.GetAttrKey))


def names(state: nnx.State) -> list[str]:
    """The sorted names of every array of an ``nnx.State``; works on abstract states (shape-only models) too."""
    return sorted(name(p) for p, _ in nnx.to_flat_state(state))


def flat_arrays(state: nnx.State) -> dict[str, np.ndarray]:
    """Every array of an ``nnx.State`` (parameters, statistics, or a gradient) as {"conv1/kernel": array}, sorted."""
    return dict(sorted((name(p), np.asarray(v[...])) for p, v in nnx.to_flat_state(state)))


def module_order(model: nnx.Module) -> dict[str, int]:
    """Each submodule's path -> its position in ``nnx.iter_modules``' order: attribute names sorted, list items
    by index ("stage1/2" before "stage1/10"), children before their parent."""
    return {name(p): i for i, (p, _) in enumerate(nnx.iter_modules(model))}


def layer_arrays(model: nnx.Module, state: nnx.State, leaf: str | Iterable[str] = "kernel") -> dict[str, Any]:
    """{layer path: array} for the arrays named ``leaf`` (e.g. each layer's "kernel") of ``state``, a state or a
    gradient of ``model``, in :func:`module_order`: {"conv1": (3, 3, 1, 8) array, "inception3a/conv1x1/conv": ...}."""
    leaves = {leaf} if isinstance(leaf, str) else set(leaf)
    out = {}
    for p, v in nnx.to_flat_state(state):
        if p and p[-1] in leaves:
            out[name(p[:-1])] = v[...]
    order = module_order(model)
    return dict(sorted(out.items(), key=lambda kv: order.get(kv[0], len(order))))


def labels(params: Any, rule: Callable[[str], str]) -> Any:
    """A pytree like ``params`` whose leaves are ``rule(path name)``: optax.multi_transform's ``param_labels``."""
    return jax.tree_util.tree_map_with_path(lambda p, _: rule(name(p)), params)
