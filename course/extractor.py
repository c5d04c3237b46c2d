"""The frozen feature extractor of notebook 05: a SmallCNN trained deterministically on *base* classes, cached.

Transfer learning needs a network that was trained on something else. The course trains its own, in seconds:
:class:`course.models.simple.SmallCNN` on the base classes of an embedded dataset (by default the real
handwritten digits 0-4 on a 16x16 canvas); the *new task* is the other classes (digits 5-9), which the
extractor never saw. Training is deterministic given the :class:`ExtractorConfig` (initial weights from its
seed, batch order from ``seed + epoch``, augmented copies from ``seed``).

With ``copies`` > 1 (or a nonzero ``max_shift`` / ``max_angle``) the extractor learns from ``copies`` randomly
shifted and rotated copies of every base image (:func:`jitter`), drawn once from the config's seed: a fixed,
deterministic augmented set, so the trained weights are still a function of the config. A source task that
brings such invariances is what makes transfer to a few labelled target images pay (notebook 05, section 6).

Trained weights are cached in ``course.cache_dir() / "extractors"`` through the store of
:mod:`course.features`: ``<config.name>.npz`` holds the flattened ``nnx.State``, ``<config.name>.json`` the key
and the sha256 of the npz. The key hashes the config, :data:`CODE_VERSION` and JAX's PRNG implementation (it
changes the initial weights). :func:`load_extractor` says in one line what it did: trained a missing entry,
rebuilt a stale one (same name, another key), rebuilt a corrupt one (checksum mismatch, unreadable), or loaded.
(The store, not Orbax: it checks a sha256 of the whole file, and Orbax restores a flipped byte of float data
silently; see :mod:`course.checkpoint`, which adds the same check to Orbax's checkpoints.)
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
from flax import nnx

import course
from course import data, paths
from course.features import entry_paths, flat_state, load_entry, save_entry, weights_hash
from course.models import build
from course.training import evaluate, fit

CODE_VERSION = "extractor-v2"  # bump when the training code changes what a config produces


@dataclasses.dataclass(frozen=True)
class ExtractorConfig:
    """Everything that decides the trained weights. ``dataset``: "digits" (sklearn's 8x8 digits centred on a
    ``canvas`` x ``canvas`` image) or "shapes" (course.data.shapes of size ``canvas``); ``base_classes`` are the
    class indices the extractor learns, the others form the new task."""

    model: str = "small_cnn"
    dataset: str = "digits"
    canvas: int = 16
    base_classes: tuple[int, ...] = (0, 1, 2, 3, 4)
    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-3
    seed: int = 0
    max_shift: int = 0       # augmented copies: whole-pixel shifts in [-max_shift, max_shift] on each axis
    max_angle: float = 0.0   # and rotations in [-max_angle, max_angle] degrees
    copies: int = 1          # how many augmented copies of each base image (1 with no jitter: the plain images)

    def __post_init__(self):
        if self.copies < 1 or self.max_shift < 0 or self.max_angle < 0:
            raise ValueError(f"copies={self.copies}, max_shift={self.max_shift}, max_angle={self.max_angle}: use "
                             "copies >= 1 and non-negative jitter")
        if self.dataset not in ("digits", "shapes"):
            raise ValueError(f"dataset={self.dataset!r}; use 'digits' or 'shapes'")
        n = 10 if self.dataset == "digits" else len(data.SHAPE_CLASSES)
        if not self.base_classes or len(set(self.base_classes)) == n or not set(self.base_classes) <= set(range(n)):
            raise ValueError(f"base_classes={self.base_classes} must be a non-empty proper subset of 0..{n - 1}, "
                             "so that the other classes can form the new task")

    @property
    def name(self) -> str:
        """The cache entry's name: model, data, base classes, then the seed and the augmentation when they are
        not the defaults (so several seeds share a directory); other settings live in the key."""
        name = f"{self.model}-{self.dataset}{self.canvas}-base{''.join(map(str, self.base_classes))}"
        if self.augmented:
            name += f"-jitter{self.max_shift}px{self.max_angle:g}degx{self.copies}"
        return name + (f"-seed{self.seed}" if self.seed else "")

    @property
    def augmented(self) -> bool:
        return self.copies > 1 or self.max_shift > 0 or self.max_angle > 0

    @property
    def new_classes(self) -> tuple[int, ...]:
        n = 10 if self.dataset == "digits" else len(data.SHAPE_CLASSES)
        return tuple(c for c in range(n) if c not in self.base_classes)

    def key(self) -> str:
        """sha256 of the config, the code version and JAX's PRNG implementation."""
        parts = {"config": dataclasses.asdict(self), "code": CODE_VERSION,
                 "prng": str(jax.config.jax_default_prng_impl)}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def _full(self) -> data.Dataset:
        if self.dataset == "digits":
            return data.digits(canvas=self.canvas)
        return data.shapes(size=self.canvas, seed=self.seed)

    def base_dataset(self) -> data.Dataset:
        """The base classes, relabelled 0..len(base_classes)-1 (the test split plain, never augmented)."""
        return self._full().subset(self.base_classes, relabel=True)

    def training_images(self) -> tuple[np.ndarray, np.ndarray]:
        """What the extractor is trained on: the base training images, or ``copies`` jittered copies of them
        (``(copies * N, H, W, 1)``, drawn from ``seed``) with their labels tiled."""
        ds = self.base_dataset()
        if not self.augmented:
            return ds.x_train, ds.y_train
        rng = np.random.default_rng([self.seed, 1])
        x = np.concatenate([jitter(ds.x_train, rng, self.max_shift, self.max_angle) for _ in range(self.copies)])
        return x, np.tile(ds.y_train, self.copies)

    def new_dataset(self) -> data.Dataset:
        """The other classes, relabelled 0..len(new_classes)-1: the new task."""
        return self._full().subset(self.new_classes, relabel=True)


def jitter(x: np.ndarray, rng: np.random.Generator, max_shift: int = 2, max_angle: float = 15.0) -> np.ndarray:
    """Each (H, W, 1) image of ``x`` (N, H, W, 1) rotated about its centre by its own angle drawn uniformly from
    [-max_angle, max_angle] degrees (bilinear, zero fill), then shifted by whole pixels drawn uniformly from
    [-max_shift, max_shift] on each axis (zero fill, nothing wraps). Deterministic given ``rng``'s state."""
    from scipy import ndimage

    x = np.asarray(x, np.float32)
    if x.ndim != 4 or x.shape[-1] != 1:
        raise ValueError(f"jitter expects (N, H, W, 1) images, got shape {x.shape}")
    n = len(x)
    angles = rng.uniform(-max_angle, max_angle, n)
    shifts = rng.integers(-max_shift, max_shift + 1, (n, 2))  # (dy, dx) per image
    out = np.empty_like(x)
    for i in range(n):
        img = ndimage.rotate(x[i, :, :, 0], angles[i], reshape=False, order=1, mode="constant") \
            if max_angle > 0 else x[i, :, :, 0]
        out[i, :, :, 0] = data.shift_images(img[None, :, :, None], int(shifts[i, 1]), int(shifts[i, 0]))[0, :, :, 0]
    return out


class Extractor(NamedTuple):
    """``model``: the trained network (its ``head`` still classifies the base classes); ``status``: "hit", "miss",
    "stale" or "corrupt" (what the cache held before this call); ``base_accuracy``: test accuracy on the base
    classes after training; ``weights_hash``: sha256 of the weights (what the feature cache keys on)."""

    model: nnx.Module
    status: str
    base_accuracy: float
    weights_hash: str
    path: Path


def train_extractor(cfg: ExtractorConfig) -> tuple[nnx.Module, float]:
    """Train ``cfg.model`` on the base classes (deterministic); returns (model, base test accuracy)."""
    ds = cfg.base_dataset()
    model = build(cfg.model, seed=cfg.seed, num_classes=len(cfg.base_classes), input_shape=ds.input_shape)
    fit(model, cfg.training_images(), epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
        verbose=False)
    return model, evaluate(model, ds.x_test, ds.y_test)["accuracy"]


def _restore(cfg: ExtractorConfig, arrays: dict) -> nnx.Module:
    """A model of ``cfg``'s architecture holding ``arrays`` (built abstractly: no initializer runs)."""
    abstract = build(cfg.model, num_classes=len(cfg.base_classes), input_shape=(cfg.canvas, cfg.canvas, 1),
                     abstract=True)
    graphdef, state = nnx.split(abstract)
    expected = set(paths.names(state))
    if set(arrays) != expected:
        raise ValueError(f"the stored arrays {sorted(arrays)} do not match the model's variables {sorted(expected)}")
    nested: dict = {}
    for path, a in arrays.items():
        *parents, leaf = path.split("/")
        d = nested
        for p in parents:
            d = d.setdefault(p, {})
        d[leaf] = a
    nnx.replace_by_pure_dict(state, nested)
    return nnx.merge(graphdef, state)


def load_extractor(cfg: ExtractorConfig = ExtractorConfig(), directory: str | Path | None = None,
                   verbose: bool = True) -> Extractor:
    """The trained extractor for ``cfg``: loaded from the cache when its entry is present, intact and made with
    the same key; otherwise (re)trained, saved atomically, and reported in one line."""
    directory = Path(directory) if directory is not None else course.cache_dir() / "extractors"
    stem, key = directory / cfg.name, cfg.key()
    found = load_entry(stem, key)
    if found.status == "hit":
        try:
            model = _restore(cfg, found.arrays)
        except ValueError as e:  # a checksum-valid file from an incompatible architecture
            found = found._replace(status="corrupt", reason=f"its arrays do not fit the model ({e})")
        else:
            acc = float(found.manifest.get("base_accuracy", float("nan")))
            if verbose:
                print(f"extractor {cfg.name}: loaded from the cache (base test accuracy {acc:.3f})")
            return Extractor(model, "hit", acc, weights_hash(model), entry_paths(stem)[0])
    if verbose:
        why = {"miss": "not in the cache", "stale": f"the cached entry is stale ({found.reason})",
               "corrupt": f"the cached entry is CORRUPT ({found.reason})"}[found.status]
        again = "" if found.status == "miss" else " again"
        aug = f", {cfg.copies} jittered copies of each image" if cfg.augmented else ""
        print(f"extractor {cfg.name}: {why}; training it{again} ({cfg.epochs} epochs on {len(cfg.base_classes)} "
              f"base classes{aug}) and saving it", flush=True)
    model, acc = train_extractor(cfg)
    save_entry(stem, flat_state(model), {"key": key, "config": dataclasses.asdict(cfg), "code": CODE_VERSION,
                                         "base_accuracy": acc})
    return Extractor(model, found.status, acc, weights_hash(model), entry_paths(stem)[0])
