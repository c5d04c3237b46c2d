"""Datasets that exist offline, as numpy arrays in (N, H, W, C) float32 layout, plus batching.

* :func:`digits`: scikit-learn's 1,797 real 8x8 handwritten digits (UCI), optionally placed on a larger canvas.
* :func:`photos`: real photographs shipped inside scikit-image and scikit-learn (for visualizing activations).
* :func:`shapes`: a generated dataset of 8 simple shapes whose position, rotation and classes are controlled,
  for the invariance and incremental-learning experiments.
* :func:`load_cifar10`: a reader for a CIFAR-10 directory the user already has (the standard python-pickle
  batches of https://www.cs.toronto.edu/~kriz/cifar.html). Nothing is ever downloaded.

Every split is fixed by a seed, so every notebook sees the same data on every machine.
"""
from __future__ import annotations

import hashlib
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np


@dataclass(frozen=True)
class Dataset:
    """A train/test split. ``x_*``: (N, H, W, C) float32 in [0, 1] (or uint8 bytes, which training normalises on
    the device); ``y_*``: (N,) int32 class indices."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}: train {self.x_train.shape}, test {self.x_test.shape}, "
                f"{self.num_classes} classes)")

    def subset(self, classes: Sequence[int], relabel: bool = False) -> "Dataset":
        """Only the examples of ``classes`` (indices); with ``relabel`` they become 0..len(classes)-1."""
        classes = list(classes)
        lut = np.full(self.num_classes, -1, np.int32)
        lut[classes] = np.arange(len(classes)) if relabel else classes
        tr, te = np.isin(self.y_train, classes), np.isin(self.y_test, classes)
        names = tuple(self.classes[c] for c in classes) if relabel else self.classes
        return Dataset(f"{self.name}{classes}", self.x_train[tr], lut[self.y_train[tr]],
                       self.x_test[te], lut[self.y_test[te]], names)


def split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """A stratified split: every class keeps ``test_fraction`` of its examples for test, chosen by ``seed``."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), bool)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        test[idx[: int(round(test_fraction * len(idx)))]] = True
    return x[~test], y[~test], x[test], y[test]


def place_on_canvas(images: np.ndarray, canvas: int) -> np.ndarray:
    """Centre (N, h, w, C) images on a zero (N, canvas, canvas, C) canvas, leaving room to shift them."""
    n, h, w, c = images.shape
    if canvas < max(h, w):
        raise ValueError(f"canvas={canvas} is smaller than the images ({h}x{w}); use canvas >= {max(h, w)}")
    out = np.zeros((n, canvas, canvas, c), images.dtype)
    top, left = (canvas - h) // 2, (canvas - w) // 2
    out[:, top:top + h, left:left + w] = images
    return out


def digits(canvas: int = 8, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's real handwritten digits: 1,797 images of 8x8 pixels, 10 classes, scaled to [0, 1].

    ``canvas`` > 8 centres each digit on a larger black image, so it can be shifted without being cut off.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[..., None]  # (1797, 8, 8, 1)
    if canvas != 8:
        x = place_on_canvas(x, canvas)
    xtr, ytr, xte, yte = split(x, d.target.astype(np.int32), test_fraction, seed)
    return Dataset(f"digits{canvas}", xtr, ytr, xte, yte, tuple(str(i) for i in range(10)))


PHOTO_NAMES = ("astronaut", "chelsea", "coffee", "camera", "rocket", "china", "flower")


def photo(name: str = "chelsea", size: int | None = None, gray: bool = False) -> np.ndarray:
    """A real photograph shipped inside scikit-image or scikit-learn as (H, W, C) float32 in [0, 1].

    ``size`` resizes the shorter side to ``size`` pixels and crops the centre square.
    """
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        img = load_sample_image(f"{name}.jpg")
    elif name in PHOTO_NAMES:
        import skimage.data

        img = getattr(skimage.data, name)()
    else:
        raise ValueError(f"unknown photo {name!r}; choose one of {', '.join(PHOTO_NAMES)}")
    img = np.asarray(img, np.float32) / 255.0
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    if size is not None:
        from skimage.transform import resize

        h, w = img.shape[:2]
        s = min(h, w)
        img = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        img = resize(img, (size, size), anti_aliasing=True).astype(np.float32)
    if gray:
        img = img @ np.array([0.299, 0.587, 0.114], np.float32)
        img = img[..., None]
    return img


# ----------------------------------------------------------------------------------------------------------
# Generated shapes
SHAPE_CLASSES = ("circle", "ring", "square", "triangle", "plus", "bar", "ell", "tee")


def _shape_mask(name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Membership of points (u, v) in [-1, 1]^2 (v pointing down) in the upright shape ``name``."""
    r = np.hypot(u, v)
    if name == "circle":
        return r <= 0.8
    if name == "ring":
        return (r <= 0.85) & (r >= 0.5)
    if name == "square":
        return (np.abs(u) <= 0.65) & (np.abs(v) <= 0.65)
    if name == "triangle":  # apex up
        return (v <= 0.7) & (v >= -0.8) & (np.abs(u) <= (v + 0.8) * 0.55)
    if name == "plus":
        return ((np.abs(u) <= 0.22) & (np.abs(v) <= 0.85)) | ((np.abs(v) <= 0.22) & (np.abs(u) <= 0.85))
    if name == "bar":
        return (np.abs(u) <= 0.9) & (np.abs(v) <= 0.22)
    if name == "ell":
        return ((u >= -0.7) & (u <= -0.3) & (np.abs(v) <= 0.85)) | ((v >= 0.45) & (v <= 0.85) & (u >= -0.7) & (u <= 0.7))
    if name == "tee":
        return ((v >= -0.85) & (v <= -0.45) & (np.abs(u) <= 0.8)) | ((np.abs(u) <= 0.2) & (v >= -0.85) & (v <= 0.85))
    raise ValueError(f"unknown shape {name!r}; choose from {SHAPE_CLASSES}")


def render_shape(name: str, size: int = 16, angle: float = 0.0, dx: float = 0.0, dy: float = 0.0,
                 scale: float = 1.0, supersample: int = 4) -> np.ndarray:
    """One anti-aliased (size, size) image of ``name`` rotated by ``angle`` degrees (counter-clockwise),
    shifted by (dx, dy) pixels and scaled by ``scale`` (1 fills about 3/4 of the image)."""
    n = size * supersample
    t = (np.arange(n) + 0.5) / supersample  # pixel-centre coordinates in [0, size)
    yy, xx = np.meshgrid(t, t, indexing="ij")
    half = size * 0.375 * scale  # shape extent 1.0 maps to this many pixels
    x = (xx - size / 2 - dx) / half
    y = (yy - size / 2 - dy) / half
    a = np.deg2rad(angle)
    u = np.cos(a) * x - np.sin(a) * y  # inverse-rotate the sample points (y points down)
    v = np.sin(a) * x + np.cos(a) * y
    m = _shape_mask(name, u, v).astype(np.float32)
    return m.reshape(size, supersample, size, supersample).mean(axis=(1, 3))


def make_shapes(n: int, classes: Sequence[str] = SHAPE_CLASSES, size: int = 16, max_shift: float = 0.0,
                max_rotation: float = 0.0, angle: float | None = None, scale_jitter: float = 0.1,
                noise: float = 0.05, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` generated images (n, size, size, 1) with labels (n,) indexing ``classes``.

    Each image draws its class uniformly, a shift in [-max_shift, max_shift] pixels on each axis, a rotation
    in [-max_rotation, max_rotation] degrees (or exactly ``angle``), a scale in 1 +- scale_jitter, and
    Gaussian pixel noise of std ``noise``. The same arguments and seed give the same images.
    """
    for c in classes:
        if c not in SHAPE_CLASSES:
            raise ValueError(f"unknown shape {c!r}; choose from {SHAPE_CLASSES}")
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(classes), n).astype(np.int32)
    shifts = rng.uniform(-max_shift, max_shift, (n, 2))
    angles = np.full(n, angle, float) if angle is not None else rng.uniform(-max_rotation, max_rotation, n)
    scales = rng.uniform(1 - scale_jitter, 1 + scale_jitter, n)
    x = np.stack([render_shape(classes[k], size, a, dx, dy, s)
                  for k, a, (dx, dy), s in zip(y, angles, shifts, scales)])
    x = np.clip(x + noise * rng.standard_normal(x.shape), 0, 1).astype(np.float32)
    return x[..., None], y


def shapes(n_train: int = 2000, n_test: int = 800, classes: Sequence[str] = SHAPE_CLASSES, size: int = 16,
           max_shift: float = 1.5, max_rotation: float = 0.0, seed: int = 0) -> Dataset:
    """The generated shapes as a :class:`Dataset` (train and test drawn with different seeds)."""
    xtr, ytr = make_shapes(n_train, classes, size, max_shift, max_rotation, seed=seed)
    xte, yte = make_shapes(n_test, classes, size, max_shift, max_rotation, seed=seed + 10_000)
    return Dataset(f"shapes{size}", xtr, ytr, xte, yte, tuple(classes))


# ----------------------------------------------------------------------------------------------------------
# CIFAR-10 from a local directory
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
# The published MD5 of each batch of cifar-10-python.tar.gz (the ones torchvision's CIFAR10 checks).
CIFAR10_MD5 = {"data_batch_1": "c99cafc152244af753f735de768cd75f", "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
               "data_batch_3": "54ebc095f3ab1f0389bbae665268c751", "data_batch_4": "634d18415352ddfa80567beed471001a",
               "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb", "test_batch": "40351d587109b95175f43aff81a1287e"}
_CIFAR_HINT = ("CIFAR-10 is never downloaded by the course: get cifar-10-python.tar.gz from "
               "https://www.cs.toronto.edu/~kriz/cifar.html, extract it, and pass the "
               "'cifar-10-batches-py' directory.")


class DatasetError(ValueError):
    """A dataset directory is missing, incomplete or corrupt. The message says which file and what to do."""


class DatasetWarning(UserWarning):
    """A dataset file is readable but not the published one (its digest differs): damaged, or made elsewhere."""


def _check_published_digests(directory: Path) -> None:
    """Warn, naming them, about the CIFAR-10 batches whose MD5 is not the published one. Not an error: a batch
    re-pickled elsewhere holds the same images; a damaged one that no longer parses fails in _read_cifar_batch."""
    def md5(name):
        with open(directory / name, "rb") as f:
            return hashlib.file_digest(f, "md5").hexdigest()

    unknown = [name for name in CIFAR10_FILES if md5(name) != CIFAR10_MD5[name]]
    if unknown:
        warnings.warn(f"{directory}: the MD5 of {', '.join(unknown)} differs from the published batch of "
                      f"cifar-10-python.tar.gz (damaged, or made elsewhere); read anyway. If these should be the "
                      f"original images, extract them again from the archive "
                      f"(https://www.cs.toronto.edu/~kriz/cifar.html).", DatasetWarning, stacklevel=3)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        data, labels = d[b"data"], d[b"labels"]
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise DatasetError(f"{path} is not a CIFAR-10 python batch ({type(e).__name__}: {e}). "
                           f"Re-extract it from the original archive. {_CIFAR_HINT}") from None
    data = np.asarray(data, np.uint8)
    labels = np.asarray(labels, np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DatasetError(f"{path}: expected 'data' of shape (N, 3072) and N labels, got data {data.shape} and "
                           f"{len(labels)} labels. Re-extract it from the original archive.")
    if labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
        raise DatasetError(f"{path}: labels outside 0..9. Re-extract it from the original archive.")
    x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, 32, 32, 3), channels last
    return x, labels.astype(np.int32)


def load_cifar10(directory: str | Path, limit: int | None = None, dtype=np.float32) -> Dataset:
    """Read CIFAR-10 from ``directory`` (the extracted ``cifar-10-batches-py``): 50,000 train and 10,000 test
    images of 32x32x3, as float32 in [0, 1], or with ``dtype=np.uint8`` as the stored bytes 0..255 (a quarter of
    the memory; :func:`course.training.fit` and ``evaluate`` normalise them on the device). ``limit`` keeps only
    the first ``limit`` images of each split. A batch whose MD5 is not the published one is read with a
    :class:`DatasetWarning` naming it."""
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise DatasetError(f"CIFAR-10 directory {directory} does not exist. {_CIFAR_HINT}")
    missing = [f for f in CIFAR10_FILES if not (directory / f).is_file()]
    if missing:
        raise DatasetError(f"CIFAR-10 directory {directory} lacks {', '.join(missing)}. {_CIFAR_HINT}")
    _check_published_digests(directory)
    parts = [_read_cifar_batch(directory / f) for f in CIFAR10_FILES[:5]]
    xtr, ytr = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    xte, yte = _read_cifar_batch(directory / "test_batch")
    if limit is not None:
        xtr, ytr, xte, yte = xtr[:limit], ytr[:limit], xte[:limit], yte[:limit]
    if np.dtype(dtype) == np.uint8:
        return Dataset("cifar10", xtr, ytr, xte, yte, CIFAR10_CLASSES)
    f32 = lambda a: a.astype(np.float32) / 255.0  # noqa: E731
    return Dataset("cifar10", f32(xtr), ytr, f32(xte), yte, CIFAR10_CLASSES)


# ----------------------------------------------------------------------------------------------------------
def batches(x: np.ndarray, y: np.ndarray, batch_size: int, *, shuffle: bool = False, seed: int = 0,
            drop_last: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (x, y) minibatches; with ``shuffle`` the order is a permutation drawn from ``seed``."""
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} examples but y has {len(y)}")
    idx = np.random.default_rng(seed).permutation(len(x)) if shuffle else np.arange(len(x))
    stop = len(x) - len(x) % batch_size if drop_last else len(x)
    for i in range(0, stop, batch_size):
        j = idx[i:i + batch_size]
        yield x[j], y[j]


def shift_images(x: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Translate (N, H, W, C) images by (dx, dy) whole pixels, filling with zeros (nothing wraps around)."""
    out = np.zeros_like(x)
    h, w = x.shape[1:3]
    src_y, dst_y = slice(max(0, -dy), min(h, h - dy)), slice(max(0, dy), min(h, h + dy))
    src_x, dst_x = slice(max(0, -dx), min(w, w - dx)), slice(max(0, dx), min(w, w + dx))
    out[:, dst_y, dst_x] = x[:, src_y, src_x]
    return out


def rotate_images(x: np.ndarray, angle: float) -> np.ndarray:
    """Rotate (N, H, W, C) images by ``angle`` degrees counter-clockwise about their centre (bilinear)."""
    from scipy.ndimage import rotate

    return rotate(x, angle, axes=(2, 1), reshape=False, order=1, mode="constant").astype(x.dtype)


# ----------------------------------------------------------------------------------------------------------
# Where spatial structure matters: digits anywhere on a larger canvas, and the same pixels in a scrambled order
def scatter_on_canvas(images: np.ndarray, canvas: int, seed: int) -> np.ndarray:
    """Place each (h, w) image of (N, h, w, C) at its own uniformly random position on a zero canvas.

    Returns (N, canvas, canvas, C). Every top-left corner in 0..canvas-h (rows) and 0..canvas-w (columns) is
    equally likely; the positions are drawn from ``seed``, so the same seed gives the same images.
    """
    n, h, w, c = images.shape
    if canvas < max(h, w):
        raise ValueError(f"canvas={canvas} is smaller than the images ({h}x{w}); use canvas >= {max(h, w)}")
    rng = np.random.default_rng(seed)
    tops, lefts = rng.integers(0, canvas - h + 1, n), rng.integers(0, canvas - w + 1, n)
    out = np.zeros((n, canvas, canvas, c), images.dtype)
    for i, (t, l) in enumerate(zip(tops, lefts)):
        out[i, t:t + h, l:l + w] = images[i]
    return out


def scattered_digits(canvas: int = 24, seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """The 8x8 digits of :func:`digits` (same fixed train/test split), each at a random position on a
    ``canvas`` x ``canvas`` image. Positions come from ``seed`` (train and test drawn independently), so a
    classifier must recognise a digit wherever it is: the setting where convolution's weight sharing pays."""
    d = digits(8, test_fraction)
    xtr = scatter_on_canvas(d.x_train, canvas, seed)
    xte = scatter_on_canvas(d.x_test, canvas, seed + 100_003)
    return Dataset(f"digits{canvas}-scattered", xtr, d.y_train, xte, d.y_test, d.classes)


def permute_pixels(x: np.ndarray, seed: int) -> np.ndarray:
    """The same fixed permutation of the H*W pixel positions applied to every image of (N, H, W, C).

    An MLP cannot tell the difference (permuting the rows of its first weight matrix gives the same function);
    a CNN loses what made it good, the fact that neighbouring pixels are neighbours."""
    n, h, w, c = x.shape
    perm = np.random.default_rng(seed).permutation(h * w)
    return x.reshape(n, h * w, c)[:, perm].reshape(n, h, w, c)
