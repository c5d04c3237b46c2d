"""Plots for the notebooks. Every function takes data and returns a ``matplotlib.figure.Figure``; none reads
globals or calls ``plt.show()`` (the notebook does), so the same figure works in a notebook, a script or a test.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure


def _grid(n: int, cols: int) -> tuple[int, int]:
    cols = max(1, min(cols, n))
    return int(np.ceil(n / cols)), cols


def image_grid(images: np.ndarray, titles: Sequence[str] | None = None, cols: int = 8, cmap: str = "gray",
               size: float = 1.2, suptitle: str | None = None, symmetric: bool = False) -> Figure:
    """Images (N, H, W) or (N, H, W, 1|3) in a grid. ``symmetric`` centres a diverging colour map on 0."""
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    rows, cols = _grid(len(images), cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * size, rows * size * 1.15), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= len(images):
            continue
        img = images[i]
        if symmetric:
            m = float(np.abs(img).max()) or 1.0
            ax.imshow(img, cmap="RdBu_r", vmin=-m, vmax=m)
        else:
            ax.imshow(img, cmap=cmap if img.ndim == 2 else None)
        if titles is not None:
            ax.set_title(titles[i], fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig
