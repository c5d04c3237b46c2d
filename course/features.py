"""Bottleneck features: run a frozen network once, keep its penultimate activations on disk, reuse them (notebook 05).

The *bottleneck features* of an image are the activations a trained network computes just before its last
layer: for :class:`course.models.simple.SmallCNN` the 64 global-average-pooled channels ``"gap"``. With the
layers below frozen, training a new last layer only needs these vectors, so they can be computed once and read
back every epoch instead of running the convolutions again (the "bottleneck" recipe of the Keras blog post
"Building powerful image classification models using very little data", Chollet 2016, and the TensorFlow
retraining tutorial; Yosinski et al., "How transferable are features in deep neural networks?", NIPS 2014).

A cache is only correct if it is invalidated whenever the answer would change. An entry here is keyed by

* a hash of the model's weights (every variable: path, dtype, shape and bytes), its class and the layer read;
* a hash of the input array (dtype, shape and bytes);
* the preprocessing description (:class:`Preprocess`, a frozen dataclass whose ``repr`` is the description);
* :data:`CODE_VERSION` (bump it when the feature computation changes).

Change any of them and the key changes, so the lookup misses. *Random augmentation* cannot be cached: features
computed once freeze one random draw and the head would see the same "augmented" image every epoch, which is
no augmentation at all; :func:`cached_features` refuses it with :class:`AugmentationNotCacheable`.

On disk an entry is ``<name>-<key>.npz`` (the arrays) plus ``<name>-<key>.json`` (a manifest holding the key and
the sha256 of the ``.npz``). Both are written atomically (:mod:`course.integrity`: a temporary file in the same
directory, then ``os.replace``), the manifest last. Reading checks the manifest's key (else the entry is *stale*) and the
checksum (else it is *corrupt*); a stale or corrupt entry is reported in one line and rebuilt, never used. The
same store keeps the trained feature extractors (:mod:`course.extractor`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import course
from course import integrity, paths
from course.training import padded_batches  # fixed-size batches: one compiled forward pass

CODE_VERSION = "features-v1"
STATUSES = ("hit", "miss", "stale", "corrupt")  # what a cache lookup can find


class AugmentationNotCacheable(ValueError):
    """Raised when asked to cache features of randomly augmented inputs (see the module docstring)."""


# ----------------------------------------------------------------------------------------------------------
# Hashes
def _update_with_array(h: "hashlib._Hash", a: np.ndarray) -> None:
    a = np.ascontiguousarray(a)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())


def array_hash(x: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and bytes (so a reshaped or re-typed array hashes differently)."""
    h = hashlib.sha256()
    _update_with_array(h, np.asarray(x))
    return h.hexdigest()


def flat_state(model: nnx.Module) -> dict[str, np.ndarray]:
    """Every variable of ``model`` (parameters and statistics) as {"conv1/kernel": array}, paths sorted."""
    return paths.flat_arrays(nnx.state(model))


def weights_hash(model: nnx.Module) -> str:
    """sha256 over the model's class name and every variable's path, dtype, shape and bytes."""
    h = hashlib.sha256(type(model).__name__.encode())
    for path, a in flat_state(model).items():
        h.update(path.encode())
        _update_with_array(h, a)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------------
# The on-disk store: <stem>.npz + <stem>.json, written atomically, read with key and checksum checks
def entry_paths(stem: Path) -> tuple[Path, Path]:
    """(``<stem>.npz``, ``<stem>.json``); appended, not ``with_suffix``, so a dot in the name is kept."""
    return stem.parent / f"{stem.name}.npz", stem.parent / f"{stem.name}.json"


def save_entry(stem: Path, arrays: dict[str, np.ndarray], manifest: dict[str, Any]) -> None:
    """Store ``arrays`` as ``stem.npz`` and ``manifest`` (+ the npz's sha256) as ``stem.json``, atomically."""
    npz, js = entry_paths(stem)
    integrity.atomic_write(npz, lambda f: np.savez(f, **arrays))
    integrity.write_json(js, {**manifest, "sha256": integrity.sums(npz.parent, [npz.name])})


class Entry(NamedTuple):
    """What :func:`load_entry` found: ``status`` in :data:`STATUSES`, the arrays on a hit (else None), the
    manifest if it could be read, and ``reason``, a few words saying why a non-hit is not usable."""

    status: str
    arrays: dict[str, np.ndarray] | None
    manifest: dict[str, Any] | None
    reason: str


def load_entry(stem: Path, key: str) -> Entry:
    """Read ``stem.json`` + ``stem.npz`` if they hold a valid entry for ``key``.

    miss: no manifest. stale: the manifest's key is not ``key`` (another config or code version wrote it).
    corrupt: the manifest is unreadable, the array file is missing, its sha256 differs from the manifest's,
    or it cannot be loaded.
    """
    npz, js = entry_paths(stem)
    if not js.exists():
        return Entry("miss", None, None, "it is not in the cache")
    try:
        manifest = integrity.read_json(js)
    except integrity.IntegrityError:
        return Entry("corrupt", None, None, "its manifest is unreadable (JSONDecodeError)")
    listed = manifest.get("sha256") if isinstance(manifest, dict) else None
    if not isinstance(listed, dict) or npz.name not in listed:
        return Entry("corrupt", None, None, "its manifest is unreadable (no sha256 of its array file)")
    if manifest.get("key") != key:
        return Entry("stale", None, manifest,
                     "it was written for another key: another config or code version")
    try:
        integrity.check(npz.parent, {npz.name: listed[npz.name]})
    except integrity.IntegrityError as e:
        reason = {"missing": "its array file is missing",
                  "changed": "the sha256 of its array file does not match its manifest"}[e.problem]
        return Entry("corrupt", None, manifest, reason)
    try:
        with np.load(npz, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError) as e:  # a checksum-consistent but unloadable file
        return Entry("corrupt", None, manifest, f"its array file cannot be loaded ({type(e).__name__})")
    return Entry("hit", arrays, manifest, "")


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "entry"


def _shape(a: np.ndarray) -> str:
    return " x ".join([f"{a.shape[0]:,}", "x".join(map(str, a.shape[1:]))])


# ----------------------------------------------------------------------------------------------------------
# Computing features
@dataclasses.dataclass(frozen=True)
class Preprocess:
    """Deterministic preprocessing applied before the network: optional bilinear resize to ``size`` x ``size``,
    then ``(x - mean) / std``. Its ``repr`` is the description that goes into the cache key."""

    size: int | None = None
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self):
        if self.size is not None and self.size < 1:
            raise ValueError(f"Preprocess(size={self.size}): use a positive image size or None")
        if not self.std > 0:
            raise ValueError(f"Preprocess(std={self.std}): the divisor must be positive")

    def __call__(self, x: jax.Array) -> jax.Array:  # (B, H, W, C) -> (B, size, size, C)
        if self.size is not None and x.shape[1:3] != (self.size, self.size):
            x = jax.image.resize(x, (x.shape[0], self.size, self.size, x.shape[3]), "bilinear")
        return (x - self.mean) / self.std


@nnx.jit(static_argnames=("layer", "preprocess"))
def _forward(model: nnx.Module, x: jax.Array, layer: str, preprocess: Preprocess | None) -> jax.Array:
    if preprocess is not None:
        x = preprocess(x)
    return model.intermediates(x)[1][layer]


def extract(model: nnx.Module, x: np.ndarray, *, layer: str = "gap", preprocess: Preprocess | None = None,
            batch_size: int = 256) -> np.ndarray:
    """The activations ``model.intermediates(x)[1][layer]`` (e.g. (N, 64) for SmallCNN's ``"gap"``), computed
    in eval mode in fixed-size batches (the last one zero-padded, so the forward pass compiles once)."""
    if not hasattr(model, "intermediates"):
        raise TypeError(f"{type(model).__name__} has no intermediates(x) method returning (logits, dict); "
                        "bottleneck features need it to read a named layer (see course.models.simple.SmallCNN)")
    model.eval()
    out = [np.asarray(_forward(model, jnp.asarray(xb), layer, preprocess))[:n]
           for xb, n in padded_batches(np.asarray(x, np.float32), batch_size)]
    return np.concatenate(out)


def feature_key(model: nnx.Module, x: np.ndarray, layer: str = "gap", preprocess: Preprocess | None = None) -> str:
    """The cache key: sha256 of (code version, weights hash, layer, data hash, preprocessing description)."""
    parts = {"code": CODE_VERSION, "weights": weights_hash(model), "layer": layer, "data": array_hash(x),
             "preprocess": repr(preprocess)}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


class Cached(NamedTuple):
    """``features`` (N, D) float32; ``status``: what the lookup found (:data:`STATUSES`); ``path`` of the npz."""

    features: np.ndarray
    status: str
    path: Path


def cached_features(model: nnx.Module, x: np.ndarray, *, name: str = "features", layer: str = "gap",
                    preprocess: Preprocess | None = None, augment: Callable | None = None,
                    directory: str | Path | None = None, verbose: bool = True) -> Cached:
    """Bottleneck features of ``x``, from the cache if an entry with the same weights, data and preprocessing
    exists and is intact, else computed with :func:`extract` and stored.

    ``name`` labels the entry (file names and messages); ``directory`` defaults to ``course.cache_dir() /
    "features"``. With ``verbose`` one line says what happened (no hashes or paths in it, so it reads the same on
    every machine). ``augment`` is accepted only to refuse it: see :class:`AugmentationNotCacheable`.
    """
    if augment is not None:
        raise AugmentationNotCacheable(
            "refusing to cache features of randomly augmented inputs: features computed once freeze ONE random "
            "draw, so every epoch would see the same 'augmented' images and the augmentation would do nothing. "
            "Cache the un-augmented features (augment=None), or recompute features of fresh augmented images "
            "every epoch with course.features.extract(model, augment(x)), which caches nothing.")
    directory = Path(directory) if directory is not None else course.cache_dir() / "features"
    x = np.asarray(x, np.float32)
    key = feature_key(model, x, layer, preprocess)
    stem = directory / f"{_slug(name)}-{key[:24]}"
    found = load_entry(stem, key)
    if found.status == "hit":
        feats = found.arrays["features"]
        if verbose:
            print(f"feature cache hit for {name!r}: loaded {_shape(feats)} features")
        return Cached(feats, "hit", entry_paths(stem)[0])
    feats = extract(model, x, layer=layer, preprocess=preprocess)
    save_entry(stem, {"features": feats}, {"key": key, "name": name, "layer": layer, "shape": list(feats.shape),
                                           "preprocess": repr(preprocess), "code": CODE_VERSION})
    if verbose:
        what = "no entry for these weights, data and preprocessing" if found.status == "miss" else found.reason
        verb = "computed" if found.status == "miss" else "recomputed"
        print(f"feature cache {found.status} for {name!r} ({what}): {verb} {_shape(feats)} features and saved them")
    return Cached(feats, found.status, entry_paths(stem)[0])
