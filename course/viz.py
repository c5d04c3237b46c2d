"""Plots for the notebooks. Every function takes data and returns a ``matplotlib.figure.Figure``; none reads
globals or calls ``plt.show()`` (the notebook does), so the same figure works in a notebook, a script or a test.
"""
from __future__ import annotations

from typing import Mapping, Sequence

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


def plot_filters(kernel: np.ndarray, cols: int = 8, title: str = "first-layer filters") -> Figure:
    """A conv kernel (kh, kw, C_in, C_out) as C_out small images: RGB if C_in == 3, else channel 0,
    blue = negative weight, red = positive."""
    kernel = np.asarray(kernel)
    if kernel.shape[2] == 3:
        k = kernel.transpose(3, 0, 1, 2)
        lo, hi = k.min(axis=(1, 2, 3), keepdims=True), k.max(axis=(1, 2, 3), keepdims=True)
        return image_grid((k - lo) / np.maximum(hi - lo, 1e-8), cols=cols, suptitle=title)
    return image_grid(kernel[:, :, 0, :].transpose(2, 0, 1), cols=cols, suptitle=title, symmetric=True)


def plot_feature_maps(maps: Mapping[str, np.ndarray], image: np.ndarray | None = None, n: int = 6,
                      size: float = 1.5) -> Figure:
    """One row per layer: the first ``n`` channels of each (H, W, C) activation, labelled with its shape.
    ``image`` (H, W, C), if given, is shown at the start of the first row."""
    names = list(maps)
    extra = 1 if image is not None else 0
    fig, axes = plt.subplots(len(names), n + extra, figsize=((n + extra) * size, len(names) * size * 1.1),
                             squeeze=False)
    for r, name in enumerate(names):
        a = np.asarray(maps[name])
        for c in range(n + extra):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if extra and c == 0:
                if r == 0:
                    ax.imshow(np.clip(image.squeeze(), 0, 1), cmap="gray" if image.shape[-1] == 1 else None)
                    ax.set_title("input", fontsize=9)
                else:
                    ax.axis("off")
                continue
            k = c - extra
            if k < a.shape[-1]:
                ax.imshow(a[..., k], cmap="viridis")
            if k == 0:
                ax.set_ylabel(f"{name}\n{'x'.join(map(str, a.shape))}", fontsize=9)
    fig.tight_layout()
    return fig


def plot_curves(histories: Mapping[str, object], metrics: Sequence[str] = ("train_loss", "test_accuracy"),
                figsize: tuple[float, float] = (10, 3.2)) -> Figure:
    """One panel per metric, one line per run: ``histories`` maps a run's name to its training History."""
    fig, axes = plt.subplots(1, len(metrics), figsize=figsize, squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for name, h in histories.items():
            ax.plot(h["epoch"], h[metric], marker="o", ms=3, label=name)
        ax.set_xlabel("epoch")
        ax.set_title(metric.replace("_", " "))
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=9)
    fig.tight_layout()
    return fig


def plot_layer_norms(series: Mapping[str, Mapping[str, float]], title: str = "gradient norm per layer",
                     log: bool = True, figsize: tuple[float, float] = (10, 3.5)) -> Figure:
    """One line per series (e.g. "plain", "residual") across layers in model order (input on the left)."""
    fig, ax = plt.subplots(figsize=figsize)
    for name, norms in series.items():
        ax.plot(range(len(norms)), list(norms.values()), marker="o", ms=3, label=name)
    longest = max(series.values(), key=len)
    ax.set_xticks(range(len(longest)))
    ax.set_xticklabels(list(longest), rotation=90, fontsize=7)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("layer (input side on the left)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


def bar_compare(values: Mapping[str, Mapping[str, float]], ylabel: str = "", title: str = "",
                log: bool = False, figsize: tuple[float, float] = (8, 3.2)) -> Figure:
    """Grouped bars: ``values[group][series]``, e.g. {"params": {"naive": 1e6, "reduced": 1.6e5}, ...}."""
    groups = list(values)
    series = list(dict.fromkeys(s for g in groups for s in values[g]))
    fig, ax = plt.subplots(figsize=figsize)
    width = 0.8 / len(series)
    for i, s in enumerate(series):
        ys = [values[g].get(s, 0) for g in groups]
        ax.bar(np.arange(len(groups)) + (i - (len(series) - 1) / 2) * width, ys, width, label=s)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def plot_xy(xs: Sequence[float], series: Mapping[str, Sequence[float]], xlabel: str, ylabel: str,
            title: str = "", figsize: tuple[float, float] = (6, 3.2), ylim: tuple[float, float] | None = None) -> Figure:
    """Several lines over a shared x axis, e.g. accuracy against shift for a CNN and an MLP."""
    fig, ax = plt.subplots(figsize=figsize)
    for name, ys in series.items():
        ax.plot(xs, ys, marker="o", ms=4, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


def plot_occlusion(image: np.ndarray, heat: np.ndarray, title: str = "", figsize=(6, 3)) -> Figure:
    """The image beside its occlusion map: how much the true class's probability drops when each region is
    covered (Zeiler & Fergus, 2014, Sec. 4.2). Warm = important."""
    fig, (a, b) = plt.subplots(1, 2, figsize=figsize)
    a.imshow(np.clip(image.squeeze(), 0, 1), cmap="gray" if image.shape[-1] == 1 else None)
    a.set_title("input", fontsize=9)
    im = b.imshow(heat, cmap="inferno")
    b.set_title("drop in p(true class)", fontsize=9)
    fig.colorbar(im, ax=b, fraction=0.046)
    for ax in (a, b):
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
