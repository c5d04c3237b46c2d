"""What a trained CNN responds to, measured: occlusion sensitivity, top-activating patches, receptive fields.

Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks" (ECCV 2014): Sec. 4 shows, for units of
each layer, the image patches that activate them most (Fig. 2) and, in Sec. 4.2, how the classifier's output
drops when a grey square covers each part of the image (Fig. 7). These functions compute both for any model
whose activations are reachable through a function ``features(x) -> (B, H, W, C)``.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


def occlusion_map(prob_fn: Callable[[jax.Array], jax.Array], image: np.ndarray, label: int, patch: int = 4,
                  stride: int = 1, fill: float = 0.5) -> np.ndarray:
    """Drop in p(label) when a ``patch`` x ``patch`` square of ``fill`` covers each position.

    ``prob_fn`` maps (B, H, W, C) images to (B, classes) probabilities. Returns (n_rows, n_cols) with one value
    per patch position (top-left corners every ``stride`` pixels); positive = covering it hurts the prediction.
    The default fill is Zeiler & Fergus's grey (0.5 on [0, 1] images). A fill equal to the background (0 on
    black-background digits) makes covering pure background change nothing, so "the network looks at the ink"
    could not fail; grey is a change everywhere, and whether the background matters becomes a measurement.
    """
    if image.ndim != 3:
        raise ValueError(f"image must be one (H, W, C) image, got shape {image.shape}; pass images[i], not a batch")
    if not 0 < patch <= min(image.shape[:2]):
        raise ValueError(f"patch={patch} must be between 1 and the image size {image.shape[:2]}")
    h, w = image.shape[:2]
    tops, lefts = range(0, h - patch + 1, stride), range(0, w - patch + 1, stride)
    batch = np.repeat(image[None], len(tops) * len(lefts), axis=0)  # (P, H, W, C)
    for i, (t, l) in enumerate((t, l) for t in tops for l in lefts):
        batch[i, t:t + patch, l:l + patch] = fill
    base = float(prob_fn(jnp.asarray(image[None]))[0, label])
    p = np.asarray(prob_fn(jnp.asarray(batch)))[:, label]
    return (base - p).reshape(len(tops), len(lefts))


def receptive_field(features: Callable[[jax.Array], jax.Array], input_shape: tuple[int, int, int],
                    row: int, col: int) -> tuple[slice, slice]:
    """The input rows and columns that can influence the unit at (row, col) of ``features``' output, found by
    differentiation (the pixels with a non-zero gradient for a random input), not by formula."""
    x = jax.random.uniform(jax.random.key(0), (1, *input_shape)) + 0.1
    g = jax.grad(lambda x: features(x)[0, row, col].sum())(x)
    nz = np.argwhere(np.abs(np.asarray(g[0])).sum(-1) > 0)
    (r0, c0), (r1, c1) = nz.min(0), nz.max(0)
    return slice(int(r0), int(r1) + 1), slice(int(c0), int(c1) + 1)


def top_activations(acts: np.ndarray, channel: int, k: int = 9) -> list[tuple[int, int, int]]:
    """The ``k`` strongest responses of ``channel`` in activations (N, H, W, C): (image, row, col), at most one
    per image, strongest first."""
    a = acts[..., channel]  # (N, H, W)
    best_pos = a.reshape(len(a), -1).argmax(1)
    best = a.reshape(len(a), -1).max(1)
    out = []
    for n in np.argsort(-best, kind="stable")[:k]:
        r, c = divmod(int(best_pos[n]), a.shape[2])
        out.append((int(n), r, c))
    return out


def crop_patches(images: np.ndarray, hits: list[tuple[int, int, int]],
                 field: Callable[[int, int], tuple[slice, slice]], size: int) -> np.ndarray:
    """Cut the receptive field of each hit (image, row, col) out of ``images`` onto (k, size, size, C) canvases
    (fields clipped at the image border are zero-padded on the clipped side)."""
    out = np.zeros((len(hits), size, size, images.shape[-1]), images.dtype)
    for i, (n, r, c) in enumerate(hits):
        rs, cs = field(r, c)
        patch = images[n, rs, cs]
        top = size - patch.shape[0] if rs.start == 0 else 0
        left = size - patch.shape[1] if cs.start == 0 else 0
        out[i, top:top + patch.shape[0], left:left + patch.shape[1]] = patch
    return out
