"""Notebook 01 (why convolutional networks work): its experiment drivers, measurements and figures.

Sources: LeCun et al., "Gradient-based learning applied to document recognition" (1998) for locality, weight
sharing and pooling; Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks" (ECCV 2014) for the
occlusion maps (Sec. 4.2, Fig. 7, a grey square slid over the image) and invariance against depth (Sec. 4.4,
Fig. 5: the distance between the feature vectors of an image and of its transformed copy, layer by layer);
Jaderberg et al., "Spatial Transformer Networks" (NeurIPS 2015) for the resampler; Hubel & Wiesel (1962) and
Zeiler & Fergus (Fig. 2, layer 1) for first-layer units as oriented edge detectors.

Every function takes data (arrays, models, lists of runs) and returns numbers or a ``Figure``; none calls
``plt.show()`` or reads a notebook's globals.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from flax import nnx
from matplotlib.figure import Figure

from course import attribution, data, models, training
from course.seeds import Spread, stack

FONT = 10  # points: every label of every figure here is at least this size at the stored figure size


# ----------------------------------------------------------------------------------------------------------
# Training several models over several seeds
def train_runs(names: Sequence[str], make_data: Callable[[int], data.Dataset], seed_list: Sequence[int], *,
               epochs: int, lr: float = 3e-3, batch_size: int = 64) -> dict[str, list[nnx.Module]]:
    """For every seed, ``make_data(seed)`` and one model per name (built with that seed, for that input shape),
    trained with :func:`course.training.fit` (batch order from the same seed). Returns ``{name: [model per
    seed]}``, each model in eval mode with ``model.test_accuracy`` and ``model.train_accuracy`` set to the last
    epoch's (the training accuracy is the mean over that epoch's batches)."""
    out: dict[str, list[nnx.Module]] = {n: [] for n in names}
    for seed in seed_list:
        ds = make_data(seed)
        for name in names:
            model = models.build(name, seed=seed, input_shape=ds.input_shape, num_classes=ds.num_classes)
            hist = training.fit(model, ds, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, verbose=False)
            model.test_accuracy, model.train_accuracy = hist.test_accuracy[-1], hist.train_accuracy[-1]
            out[name].append(model)
    return out


def accuracies(runs: Mapping[str, Sequence[nnx.Module]], split: str = "test") -> dict[str, Spread]:
    """``{name: Spread of the final test (or, with split="train", training) accuracies}`` of :func:`train_runs`."""
    return {name: Spread(tuple(float(getattr(m, f"{split}_accuracy")) for m in ms)) for name, ms in runs.items()}


def fewer_examples(ds: data.Dataset, n: int, seed: int) -> data.Dataset:
    """``ds`` with only ``n`` training examples, ``n // classes`` of each class drawn with ``seed``, repeated
    (and the repeats shuffled by ``fit``) up to the original training-set size, so that a run with the same
    epochs takes the same number of steps of the same compiled program as a run on all of ``ds``. The test
    set is unchanged."""
    k = n // ds.num_classes
    if k < 1 or k * ds.num_classes != n:
        raise ValueError(f"n={n} must be a positive multiple of the {ds.num_classes} classes")
    order = np.random.default_rng(seed).permutation(len(ds.y_train))
    picked = np.concatenate([order[ds.y_train[order] == c][:k] for c in range(ds.num_classes)])
    if len(picked) < n:
        raise ValueError(f"n={n}: some class has fewer than {k} training examples")
    idx = np.resize(picked, len(ds.y_train))  # repeat up to the full size
    return data.Dataset(f"{ds.name}-{n}", ds.x_train[idx], ds.y_train[idx], ds.x_test, ds.y_test, ds.classes)


def permuted(ds: data.Dataset, seed: int) -> data.Dataset:
    """``ds`` with one fixed pixel permutation (drawn from ``seed``) applied to every train and test image."""
    return data.Dataset(f"{ds.name}-permuted", data.permute_pixels(ds.x_train, seed), ds.y_train,
                        data.permute_pixels(ds.x_test, seed), ds.y_test, ds.classes)


# ----------------------------------------------------------------------------------------------------------
# Shift and rotation
def shifted_accuracy(model: nnx.Module, x: np.ndarray, y: np.ndarray, s: int) -> float:
    """Test accuracy with every image moved ``s`` pixels left, right, up and down (the mean of the four)."""
    moves = [(s, 0), (-s, 0), (0, s), (0, -s)] if s else [(0, 0)]
    return float(np.mean([training.evaluate(model, data.shift_images(x, mx, my), y)["accuracy"]
                          for mx, my in moves]))


def accuracy_on(model: nnx.Module, sets: Sequence[np.ndarray], y: np.ndarray) -> list[float]:
    """Test accuracy of ``model`` on each of several versions (N, H, W, C) of the same test images (labels y),
    e.g. the test set rotated by each angle of a list: compute the versions once, evaluate every model on them."""
    return [training.evaluate(model, x, y)["accuracy"] for x in sets]


def curves_over_seeds(xs: Sequence[float], curves: Mapping[str, Sequence[Sequence[float]]], xlabel: str,
                      ylabel: str, title: str = "", chance: float | None = None,
                      figsize: tuple[float, float] = (7, 3.6), logx: bool = False) -> Figure:
    """Mean over seeds with error bars of one sample sd, one line per name; ``curves[name]`` is a list of
    curves (one per seed), each with one value per x (ticks at the xs, on a log axis with ``logx``)."""
    fig, ax = plt.subplots(figsize=figsize)
    for name, cs in curves.items():
        mean, sd = stack(cs)  # cs: (seeds, len(xs))
        ax.errorbar(xs, mean, yerr=sd, marker="o", ms=4, capsize=3, label=f"{name} ({len(cs)} seeds)")
    if chance is not None:
        ax.axhline(chance, color="grey", ls=":", lw=1, label="chance")
    if logx:
        ax.set_xscale("log")
        ax.minorticks_off()
    ax.set_xticks(list(xs))
    ax.set_xticklabels([f"{x:,}" for x in xs])
    ax.set_xlabel(xlabel, fontsize=FONT)
    _accuracy_axes(ax, ylabel, title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1))  # outside the axes: it hides no point
    fig.tight_layout()
    return fig


def _accuracy_axes(ax, ylabel: str, title: str) -> None:
    """The y axis of an accuracy plot (0 to 1), projector-sized labels and the title."""
    ax.set_ylabel(ylabel, fontsize=FONT)
    ax.set_ylim(0, 1)
    ax.tick_params(labelsize=FONT)
    if title:
        ax.set_title(title, fontsize=FONT + 1)


def bars_over_seeds(values: Mapping[str, Mapping[str, Spread]], ylabel: str, title: str = "",
                    chance: float | None = None, figsize: tuple[float, float] = (7.5, 3.6)) -> Figure:
    """Grouped bars ``values[group][series]`` at the mean, an error bar of one sd, and every seed as a dot."""
    groups = list(values)
    series = list(dict.fromkeys(s for g in groups for s in values[g]))
    fig, ax = plt.subplots(figsize=figsize)
    width = 0.8 / len(series)
    for i, s in enumerate(series):
        xs = np.arange(len(groups)) + (i - (len(series) - 1) / 2) * width
        sp = [values[g].get(s) for g in groups]
        ax.bar(xs, [v.mean if v else 0 for v in sp], width, yerr=[v.sd if v else 0 for v in sp], capsize=3,
               label=s, alpha=0.85)
        for x, v in zip(xs, sp):
            if v:
                ax.plot([x] * len(v.values), v.values, "k.", ms=4)
    if chance is not None:
        ax.axhline(chance, color="grey", ls=":", lw=1)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, fontsize=FONT)
    _accuracy_axes(ax, ylabel, title)
    ax.legend(fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------------------
# Occlusion (Zeiler & Fergus 2014, Sec. 4.2)
def covers_ink(image: np.ndarray, patch: int, stride: int = 1, threshold: float = 0.3) -> np.ndarray:
    """(n_rows, n_cols) booleans, laid out like :func:`course.attribution.occlusion_map`: does the square at
    each position cover at least one ink pixel (value > ``threshold``) of ``image`` (H, W, C)?"""
    ink = image[..., 0] > threshold  # (H, W)
    h, w = ink.shape
    return np.array([[ink[t:t + patch, l:l + patch].any() for l in range(0, w - patch + 1, stride)]
                     for t in range(0, h - patch + 1, stride)])


def per_pixel(heat: np.ndarray, patch: int, shape: tuple[int, int], stride: int = 1) -> np.ndarray:
    """An occlusion map (n_rows, n_cols) spread back onto the image (H, W): each pixel gets the mean drop of
    the squares that cover it."""
    total, cover = np.zeros(shape), np.zeros(shape)
    for r in range(heat.shape[0]):
        for c in range(heat.shape[1]):
            t, l = r * stride, c * stride
            total[t:t + patch, l:l + patch] += heat[r, c]
            cover[t:t + patch, l:l + patch] += 1
    return total / np.maximum(cover, 1)


def occlusion_study(model: nnx.Module, x: np.ndarray, y: np.ndarray, patch: int = 4,
                    fill: float = 0.5) -> dict[str, np.ndarray]:
    """Occlusion maps of ``model`` for the images (N, H, W, C) it classifies correctly.

    Returns ``index`` (which of the N were correct), ``heat`` (n, rows, cols) drops in p(true class), and per
    image the mean drop over the positions whose square covers ink (``ink``) and over those that cover only
    background (``background``)."""
    probs = jax.jit(lambda v: jax.nn.softmax(model(v)))
    pred = training.predict(model, x).argmax(-1)
    index = np.flatnonzero(pred == y)
    heats, ink, bg = [], [], []
    for i in index:
        heat = attribution.occlusion_map(probs, x[i], int(y[i]), patch=patch, stride=1, fill=fill)
        on_ink = covers_ink(x[i], patch)
        heats.append(heat)
        ink.append(heat[on_ink].mean() if on_ink.any() else np.nan)
        bg.append(heat[~on_ink].mean() if (~on_ink).any() else np.nan)
    return {"index": index, "heat": np.stack(heats), "ink": np.asarray(ink), "background": np.asarray(bg)}


def occlusion_figure(images: np.ndarray, maps: np.ndarray, titles: Sequence[str],
                     figsize: tuple[float, float] = (10, 4.6)) -> Figure:
    """Top row the images, bottom row their per-pixel occlusion maps (H, W) on ONE colour scale (symmetric
    around 0: red = covering it lowers p(true class), blue = raises it), with one colour bar."""
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=figsize, squeeze=False)
    m = float(np.abs(maps).max()) or 1.0
    for k in range(n):
        axes[0, k].imshow(images[k][..., 0], cmap="gray", vmin=0, vmax=1)
        axes[0, k].set_title(titles[k], fontsize=FONT)
        im = axes[1, k].imshow(maps[k], cmap="RdBu_r", vmin=-m, vmax=m)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_ylabel("input", fontsize=FONT)
    axes[1, 0].set_ylabel("drop in p(label)", fontsize=FONT)
    cb = fig.colorbar(im, ax=axes[1, :].tolist(), fraction=0.025, pad=0.02)
    cb.ax.tick_params(labelsize=9)
    return fig


# ----------------------------------------------------------------------------------------------------------
# First-layer filters as oriented edge detectors (Hubel & Wiesel 1962; Zeiler & Fergus 2014, Fig. 2, layer 1)
def filter_parts(kernels: np.ndarray) -> dict[str, np.ndarray]:
    """Split every filter of ``kernels`` (K, K, 1, C) into three orthogonal parts and return the fraction of its
    energy (sum of squared weights) in each, (C,) arrays that sum to 1:

    - ``brightness``: the constant part (the filter's mean times a filter of ones): responds to local brightness;
    - ``edge``: the best-fitting intensity ramp ``b (x cos θ + y sin θ)`` (x to the right, y down, centred on the
      middle tap): the linear approximation of an oriented edge detector, which responds to the brightness
      gradient along θ;
    - ``rest``: everything else (K**2 - 3 dimensions: spots, bars, checkerboards, noise).

    Also ``edge_share`` = edge / (edge + rest), how much of the filter's zero-mean pattern is an oriented edge,
    and ``theta`` (C,), the direction of the ramp in degrees in [0, 180) (the edge runs perpendicular to it).
    A filter of independent Gaussian weights has on average the fractions :func:`chance_parts` returns."""
    if kernels.ndim != 4 or kernels.shape[0] != kernels.shape[1] or kernels.shape[2] != 1:
        raise ValueError(f"kernels must be (K, K, 1, C), square with one input channel; got shape {kernels.shape}")
    k = kernels.shape[0]
    c = np.arange(k) - (k - 1) / 2
    yy, xx = np.meshgrid(c, c, indexing="ij")  # (K, K): row = y (down), column = x (right)
    ones = np.full(k * k, 1 / k)  # unit-length constant pattern
    rx, ry = xx.ravel() / np.linalg.norm(xx), yy.ravel() / np.linalg.norm(yy)  # unit ramps, orthogonal to ones
    w = kernels.reshape(k * k, -1)  # (K*K, C)
    energy = np.maximum((w ** 2).sum(0), 1e-30)
    bx, by = rx @ w, ry @ w  # (C,) each
    brightness, edge = (ones @ w) ** 2 / energy, (bx ** 2 + by ** 2) / energy
    rest = 1 - brightness - edge
    return {"brightness": brightness, "edge": edge, "rest": rest,
            "edge_share": edge / np.maximum(edge + rest, 1e-30), "theta": np.degrees(np.arctan2(by, bx)) % 180}


def chance_parts(k: int = 3) -> dict[str, float]:
    """The mean of :func:`filter_parts` for a K x K filter of independent Gaussian weights (any scale): a random
    direction puts on average d / K**2 of its squared length in a d-dimensional subspace, so brightness 1/K**2,
    edge 2/K**2, rest (K**2 - 3)/K**2, and edge_share 2/(K**2 - 1)."""
    n = k * k
    return {"brightness": 1 / n, "edge": 2 / n, "rest": (n - 3) / n, "edge_share": 2 / (n - 1)}


def patch_parts(images: np.ndarray, k: int = 3) -> dict[str, float]:
    """:func:`filter_parts` of the images' own K x K patches (N, H, W, 1): the fraction of the patches' total
    energy in brightness, edge and rest. A filter's gradient is a weighted sum of such patches, so this is where
    training can write into a first-layer filter."""
    p = np.lib.stride_tricks.sliding_window_view(images[..., 0], (k, k), axis=(1, 2))  # (N, H-k+1, W-k+1, k, k)
    p = p.reshape(-1, k, k).transpose(1, 2, 0)[:, :, None, :]  # (k, k, 1, patches)
    parts = filter_parts(p)
    energy = (p ** 2).sum(axis=(0, 1, 2))
    return {name: float((parts[name] * energy).sum() / energy.sum()) for name in ("brightness", "edge", "rest")}


def filters_figure(initial: np.ndarray, trained: np.ndarray, image: np.ndarray, maps: np.ndarray,
                   n: int = 8, figsize: tuple[float, float] = (10, 5.6)) -> Figure:
    """Four labelled rows for the first ``n`` filters of a first layer (K, K, 1, C): the initial filters, the
    trained ones (these two rows on one symmetric colour scale), their difference (what training wrote, on its
    own symmetric scale, titled with its :func:`filter_parts` edge share), each row with a colour bar; and the
    trained layer's feature maps (H, W, C) of ``image`` (H, W, 1), shown in the left column of the last row."""
    fig, axes = plt.subplots(4, n + 1, figsize=figsize, squeeze=False)
    update = trained - initial
    share = filter_parts(update)["edge_share"]
    rows = [("initial", initial), ("trained", trained), ("update =\ntrained - initial\n(title: edge share)", update)]
    shared = float(max(np.abs(initial[..., 0, :n]).max(), np.abs(trained[..., 0, :n]).max())) or 1.0
    for r, (label, k) in enumerate(rows):
        m = shared if r < 2 else (float(np.abs(k[..., 0, :n]).max()) or 1.0)  # initial, trained: one scale
        axes[r, 0].axis("off")
        axes[r, 0].text(1.0, 0.5, label, ha="right", va="center", fontsize=9, transform=axes[r, 0].transAxes)
        for c in range(n):
            im = axes[r, c + 1].imshow(k[:, :, 0, c], cmap="RdBu_r", vmin=-m, vmax=m)
            if r == 2:
                axes[r, c + 1].set_title(f"{share[c]:.2f}", fontsize=9)
        cb = fig.colorbar(im, ax=axes[r, :].tolist(), fraction=0.02, pad=0.01)
        cb.ax.tick_params(labelsize=9)
    axes[3, 0].imshow(image[..., 0], cmap="gray", vmin=0, vmax=1)
    axes[3, 0].set_title("input", fontsize=9)
    mm = float(maps[..., :n].max()) or 1.0
    for c in range(n):
        im = axes[3, c + 1].imshow(maps[..., c], cmap="magma", vmin=0, vmax=mm)
    axes[3, 0].set_ylabel("trained layer's\nfeature maps", fontsize=9)
    cb = fig.colorbar(im, ax=axes[3, :].tolist(), fraction=0.02, pad=0.01)
    cb.ax.tick_params(labelsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for c in range(n):
        axes[0, c + 1].set_title(f"filter {c}", fontsize=9)
    return fig


# ----------------------------------------------------------------------------------------------------------
# Invariance against depth (Zeiler & Fergus 2014, Sec. 4.4, Fig. 5) and what the units of each layer select
STAGES = ("conv1", "pool1", "conv2", "pool2", "conv3", "gap", "logits")


def feature_distance(cnn: nnx.Module, x: np.ndarray, x_moved: np.ndarray) -> dict[str, float]:
    """For each stage of a SmallCNN: the mean over images of ||f(x) - f(x')|| / ||f(x)||, the distance between
    the feature vectors of an image and of its transformed copy relative to the feature vector's length
    (0 = invariant, about 1.4 for unrelated vectors of equal length and random direction)."""
    _, a = cnn.intermediates(jnp.asarray(x))
    _, b = cnn.intermediates(jnp.asarray(x_moved))
    out = {}
    for k in STAGES:
        fa, fb = np.asarray(a[k]).reshape(len(x), -1), np.asarray(b[k]).reshape(len(x), -1)
        out[k] = float(np.mean(np.linalg.norm(fa - fb, axis=1) / np.maximum(np.linalg.norm(fa, axis=1), 1e-12)))
    return out


def label_purity(acts: np.ndarray, labels: np.ndarray, k: int = 9) -> float:
    """Mean over the channels of activations (N, H, W, C) of the fraction of a channel's ``k`` most activating
    images (each image's strongest position) that share the most common label among them."""
    best = acts.reshape(len(acts), -1, acts.shape[-1]).max(1)  # (N, C)
    top = np.argsort(-best, axis=0, kind="stable")[:k]  # (k, C)
    return float(np.mean([np.bincount(labels[top[:, c]]).max() / k for c in range(acts.shape[-1])]))


def chance_purity(labels: np.ndarray, k: int = 9, draws: int = 4000, seed: int = 0) -> float:
    """What :func:`label_purity` gives for ``k`` images drawn at random from ``labels``."""
    rows = np.random.default_rng(seed).choice(labels, (draws, k))
    return float(np.mean([np.bincount(r).max() / k for r in rows]))


def profile_figure(stages: Sequence[str], profiles: Mapping[str, Sequence[Mapping[str, float]]], ylabel: str,
                   title: str = "", figsize: tuple[float, float] = (7.5, 3.4)) -> Figure:
    """One line per name across the network's stages (input side on the left): the mean over the models in
    ``profiles[name]`` (one dict stage -> value per seed) with error bars of one sd."""
    fig, ax = plt.subplots(figsize=figsize)
    for name, ps in profiles.items():
        mean, sd = stack([[p[s] for s in stages] for p in ps])  # (stages,) each
        ax.errorbar(range(len(stages)), mean, yerr=sd, marker="o", ms=4, capsize=3, label=name)
    ax.set_xticks(range(len(stages)))
    ax.set_xticklabels(stages, fontsize=FONT)
    ax.set_xlabel("stage (input side on the left)", fontsize=FONT)
    ax.set_ylabel(ylabel, fontsize=FONT)
    ax.tick_params(labelsize=FONT)
    ax.set_ylim(bottom=0)
    if title:
        ax.set_title(title, fontsize=FONT + 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


def examples_figure(rows: Mapping[str, np.ndarray], titles: Mapping[str, Sequence[str]] | None = None,
                    n: int = 8, size: float = 1.15) -> Figure:
    """One row of the first ``n`` images (N, H, W, 1) of each named set (sets may differ in size), the row
    labelled with the set's name and image size; ``titles[name]``, if given, titles each image."""
    fig, axes = plt.subplots(len(rows), n, figsize=(n * size, len(rows) * size * 1.3), squeeze=False)
    for r, (name, imgs) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(imgs[c][..., 0], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if titles is not None:
                ax.set_title(titles[name][c], fontsize=9)
        axes[r, 0].set_ylabel(f"{name}\n{imgs.shape[1]}x{imgs.shape[2]}", fontsize=9)
    fig.tight_layout()
    return fig
