"""A folder of images per class (ImageNet's and Imagenette's layout): listing it, decoding and augmenting one file.

``DIR/train/<class>/*.jpg`` and ``DIR/val/<class>/*.jpg`` (JPEG or PNG, any size). Class names are the sorted
folder names of ``train``; ``val`` must have the same ones. Every problem is a :class:`course.data.DatasetError`
naming the path and the fix: a missing or empty folder, a class without images, different classes in train and
val, a file that does not decode (named when it is reached: the run stops there, never skips it silently).

The augmentations are the ones ImageNet training uses since GoogLeNet (Szegedy et al. 2015, Sec. 6; torchvision's
``RandomResizedCrop`` and ``CenterCrop``): for training a random crop of 8%-100% of the area with an aspect ratio
in [3/4, 4/3], resized to ``size`` x ``size``, flipped left-right half the time; for evaluation the centre
``size / 0.875`` crop (the 224-of-256 convention). Randomness comes from a seed per example, so an example's
crop does not depend on which process or worker decodes it. Outputs stay uint8: normalisation runs on the device.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path

import numpy as np

from course.data import DatasetError

SUFFIXES = (".jpg", ".jpeg", ".png")
EVAL_CROP = 0.875  # evaluation: the centre crop covers 87.5% of the shorter side (224 of 256)


@dataclasses.dataclass(frozen=True)
class ImageFolder:
    """One split: ``paths`` (N,) with class indices ``labels`` (N,) into ``classes`` (sorted folder names)."""

    root: Path
    classes: tuple[str, ...]
    paths: tuple[str, ...]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)


def scan(split_dir: str | Path, classes: tuple[str, ...] | None = None) -> ImageFolder:
    """List ``split_dir/<class>/*`` (JPEG and PNG files; other files are ignored with a warning). With
    ``classes`` (the train split's), the folder must hold exactly those classes."""
    root = Path(split_dir).expanduser()
    layout = "DIR/train/<class>/*.jpg and DIR/val/<class>/*.jpg"
    if not root.is_dir():
        raise DatasetError(f"{root} does not exist or is not a folder; folder:DIR needs {layout}")
    found = tuple(sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")))
    if not found:
        raise DatasetError(f"{root} holds no class folders; folder:DIR needs {layout}")
    if classes is not None and found != tuple(classes):
        train, here = set(classes), set(found)
        raise DatasetError(f"{root} has other classes than the train folder: only in train {sorted(train - here)}, "
                           f"only in {root.name} {sorted(here - train)}; both splits need the same class folders")
    paths, labels, ignored = [], [], []
    for i, name in enumerate(found):
        files = sorted(f for f in (root / name).iterdir() if f.is_file() and not f.name.startswith("."))
        images = [f for f in files if f.suffix.lower() in SUFFIXES]
        ignored += [f for f in files if f.suffix.lower() not in SUFFIXES]
        if not images:
            raise DatasetError(f"class folder {root / name} holds no images (.jpg, .jpeg or .png); add some or "
                               f"remove the folder (from train and val)")
        paths += [str(f) for f in images]
        labels += [i] * len(images)
    if ignored:
        warnings.warn(f"{len(ignored)} files under {root} are not .jpg/.jpeg/.png and were ignored, e.g. {ignored[0]}",
                      stacklevel=2)
    return ImageFolder(root, found, tuple(paths), np.asarray(labels, np.int32))


def open_rgb(path: str, min_short: float | None = None):
    """The image at ``path`` as an RGB PIL image, or a :class:`DatasetError` naming the file. With ``min_short``,
    a JPEG is decoded at 1/2, 1/4 or 1/8 scale where its shorter side stays at least ``min_short`` (faster)."""
    from PIL import Image

    try:
        img = Image.open(path)
        if min_short is not None and min(img.size) > 2 * min_short:
            k = min_short / min(img.size)
            img.draft("RGB", (math.ceil(img.size[0] * k), math.ceil(img.size[1] * k)))
        return img.convert("RGB")
    except Exception as e:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ... for broken files
        raise DatasetError(f"{path} cannot be decoded as an image ({type(e).__name__}: {e}); delete or replace "
                           f"that file, then run again (--resume continues from the last checkpoint)") from None


def random_resized_crop(w: int, h: int, rng: np.random.Generator, scale=(0.08, 1.0),
                        ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """A crop box (left, top, right, bottom) of a ``w`` x ``h`` image: a random area fraction and aspect ratio,
    ten tries, else the largest centred box of an allowed ratio (torchvision's rule)."""
    area = w * h
    for _ in range(10):
        a = area * rng.uniform(*scale)
        r = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = round(math.sqrt(a * r)), round(math.sqrt(a / r))
        if 0 < cw <= w and 0 < ch <= h:
            left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            return left, top, left + cw, top + ch
    r = min(max(w / h, ratio[0]), ratio[1])
    cw, ch = (w, round(w / r)) if w / h < r else (round(h * r), h)
    cw, ch = min(cw, w), min(ch, h)
    left, top = (w - cw) // 2, (h - ch) // 2
    return left, top, left + cw, top + ch


def train_image(path: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Random resized crop and flip of the image at ``path``: (size, size, 3) uint8."""
    from PIL import Image

    img = open_rgb(path)
    out = np.asarray(img.resize((size, size), Image.BILINEAR, box=random_resized_crop(*img.size, rng)))
    return out[:, ::-1] if rng.random() < 0.5 else out  # (S, S, 3)


def eval_image(path: str, size: int) -> np.ndarray:
    """Centre crop of the image at ``path`` (``EVAL_CROP`` of its shorter side), resized: (size, size, 3) uint8."""
    from PIL import Image

    img = open_rgb(path, min_short=size / EVAL_CROP)
    w, h = img.size
    side = EVAL_CROP * min(w, h)
    left, top = (w - side) / 2, (h - side) / 2
    return np.asarray(img.resize((size, size), Image.BILINEAR, box=(left, top, left + side, top + side)))
