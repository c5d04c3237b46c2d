"""Helpers of notebook 05 only: the few-shot transfer task where pretraining pays, fine-tuning on it, what a
feature cache saves at scale, the classifier as a sliding window, and the notebook's figures.

* The few-shot task (:func:`jittered_target`, :func:`kshot`): the new classes (digits 5-9) shifted by up to
  ±2 px and rotated by up to ±15° (:func:`course.extractor.jitter`), with only k labelled images per class. A
  few images cannot teach a probe the invariances; a source network trained on jittered base digits brings
  them (Yosinski et al., "How transferable are features in deep neural networks?", NIPS 2014: transfer pays
  when the source task is related and the target's labels are few).
* :func:`finetune`: the whole network trained on the k-shot set from pretrained weights, with the two learning
  rates of :func:`course.transfer.finetune_tx` (Yosinski et al. Sec. 4.1; Howard & Ruder, ACL 2018).
* :func:`cache_saving`: seconds per epoch a feature cache saves, from the frozen part's multiply-accumulates
  (:mod:`course.counting`) at a stated throughput (the TensorFlow ``retrain.py`` recipe: Inception-v3's
  2048-d "bottlenecks" computed once per image).
* :func:`class_score_map`: global average pooling followed by a linear layer equals the linear layer applied at
  every position followed by the average (both are linear), so the head is a 1x1 convolution, and averaging its
  scores over 4x4 windows of the ``conv3`` map of a larger image scores every 16x16 window at stride 4 in one
  pass (CS231n, "Converting FC layers to CONV layers"; Sermanet et al., "OverFeat", ICLR 2014).
  :func:`window_scores` is the reference, crop by crop; with ``context`` it gives each crop its real
  surroundings, which is all the one-pass map adds. :func:`place_digits`, :func:`window_kinds` and
  :func:`window_outcomes` say which windows of a map are right: those on a digit name it or not, empty windows
  have no right answer (a classifier trained on digits only has no "nothing here" class).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from flax import nnx
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from course import data, training, transfer
from course.extractor import jitter
from course.seeds import Spread, stack


# ----------------------------------------------------------------------------------------------------------
# The few-shot task
def jittered_target(new: data.Dataset, seed: int, test_copies: int = 4, max_shift: int = 2,
                    max_angle: float = 15.0) -> data.Dataset:
    """The new task with every image shifted and rotated at random (drawn from ``seed``): each training image
    once (the pool the k-shot sets are drawn from), each test image ``test_copies`` times (a larger test set,
    so a test accuracy moves by less than 1/len(test) per image). Shapes as ``new``; labels tiled."""
    rng = np.random.default_rng([seed, 2])
    x_train = jitter(new.x_train, rng, max_shift, max_angle)  # (N, H, W, 1)
    x_test = np.concatenate([jitter(new.x_test, rng, max_shift, max_angle) for _ in range(test_copies)])
    return data.Dataset(f"{new.name} jittered ±{max_shift}px ±{max_angle:g}°", x_train, new.y_train, x_test,
                        np.tile(new.y_test, test_copies), new.classes)


def kshot(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Indices of ``k`` examples of every class in ``y`` (N,), drawn without replacement from ``seed``; (C*k,)."""
    rng = np.random.default_rng([seed, 3])
    out = []
    for c in np.unique(y):
        pool = np.flatnonzero(y == c)
        if len(pool) < k:
            raise ValueError(f"class {c} has {len(pool)} examples, fewer than k={k}; use k <= {len(pool)}")
        out.append(rng.choice(pool, k, replace=False))
    return np.concatenate(out)


def finetune(net: nnx.Module, x: np.ndarray, y: np.ndarray, tx, *, lr_head: float, lr_pretrained: float,
             steps: int, seed: int) -> nnx.Module:
    """A copy of ``net`` with a fresh :class:`~course.transfer.LinearProbe` head (from ``seed``), trained on all of
    (x, y) as one batch for ``steps`` Adam steps: head at ``lr_head``, every other layer at ``lr_pretrained``
    (``tx`` from :func:`course.transfer.finetune_tx`, shared so that every run reuses one compiled step).
    Measured on a 2-core CPU: ``course.training.fit``'s Python loop over its jitted step ran these 100-step
    runs in 1.3 s of CPU time, the same steps inside one ``jax.lax.fori_loop`` in 3.1 s."""
    model = transfer.with_new_head(net, int(y.max()) + 1, seed=seed)
    opt = transfer.two_rate_optimizer(model, tx, head=lr_head, pretrained=lr_pretrained)
    training.fit(model, (x, y), epochs=steps, batch_size=len(x), optimizer=opt, seed=seed, verbose=False)
    return model


# ----------------------------------------------------------------------------------------------------------
# What a cache saves at scale
def cache_saving(frozen_macs: int, images: int, flops_per_second: float) -> float:
    """Seconds per epoch that reading cached features saves: one forward pass of the frozen part per image,
    ``2 * frozen_macs`` FLOPs (a multiply-accumulate is two FLOPs), at ``flops_per_second``."""
    if flops_per_second <= 0:
        raise ValueError(f"flops_per_second={flops_per_second}: a throughput must be positive")
    return 2 * frozen_macs * images / flops_per_second


# ----------------------------------------------------------------------------------------------------------
# The classifier as a sliding window
def class_score_map(net: nnx.Module, probe: transfer.LinearProbe, x: np.ndarray) -> np.ndarray:
    """Class scores of every 16x16 window at stride 4 of the larger images ``x`` (B, H, W, 1), in one pass:
    the probe applied at every position of the 4x4-averaged ``conv3`` map. Returns (B, H/4 - 3, W/4 - 3, C)."""
    net.eval()
    probe.eval()
    conv3 = net.intermediates(jnp.asarray(x))[1]["conv3"]                 # (B, H/4, W/4, 64)
    windows = nnx.avg_pool(conv3, (4, 4), strides=(1, 1))                  # (B, H/4-3, W/4-3, 64)
    b, h, w, d = windows.shape
    return np.asarray(probe(windows.reshape(-1, d))).reshape(b, h, w, -1)  # (B, h, w, C)


def window_scores(net: nnx.Module, probe: transfer.LinearProbe, x: np.ndarray, stride: int = 4,
                  size: int = 16, context: int = 0) -> np.ndarray:
    """The reference for :func:`class_score_map`: every ``size`` x ``size`` crop at ``stride`` run through the
    network separately (each crop zero-padded at its own border). Returns (B, rows, cols, C).

    ``context`` > 0 (a multiple of the network's total stride, 4) cuts each crop with ``context`` pixels of its
    real surroundings on every side (zeros beyond the image), runs the network on that, and averages the
    ``conv3`` map over the window's own positions only. Where the surroundings lie inside the image and reach
    as far as the padding's effect does (8 pixels for three 3x3 convolutions and two 2x2 pools), this is exactly
    the one-pass map: what the one pass adds to a crop is its borders' real neighbours."""
    if context % 4 or size % 4:
        raise ValueError(f"context={context} and size={size} must be multiples of the network's stride, 4")
    net.eval()
    probe.eval()
    b, hh, ww, ch = x.shape
    rows, cols = (hh - size) // stride + 1, (ww - size) // stride + 1
    xp = np.pad(x, ((0, 0), (context, context), (context, context), (0, 0)))  # zeros beyond the image
    full = size + 2 * context
    crops = np.stack([xp[:, i * stride:i * stride + full, j * stride:j * stride + full]
                      for i in range(rows) for j in range(cols)], axis=1)  # (B, rows*cols, full, full, C)
    conv3 = net.intermediates(jnp.asarray(crops.reshape(-1, full, full, ch)))[1]["conv3"]  # (N, full/4, full/4, D)
    c, n = context // 4, size // 4
    feats = conv3[:, c:c + n, c:c + n].mean(axis=(1, 2))  # the window's own positions; = "gap" when context = 0
    return np.asarray(probe(feats)).reshape(b, rows, cols, -1)


def place_digits(digits: np.ndarray, centres: Sequence[tuple[int, int]], shape: tuple[int, int]) -> np.ndarray:
    """Images of ``shape`` (H, W), zero everywhere except ``K`` small digits: ``digits`` (B, K, h, w, 1) are
    placed with their centres at ``centres`` [(row, col)] * K. Returns (B, H, W, 1)."""
    b, k, h, w, _ = digits.shape
    if len(centres) != k:
        raise ValueError(f"{k} digits per image but {len(centres)} centres")
    out = np.zeros((b, *shape, 1), np.float32)
    for n, (r, c) in enumerate(centres):
        top, left = r - h // 2, c - w // 2
        if top < 0 or left < 0 or top + h > shape[0] or left + w > shape[1]:
            raise ValueError(f"a {h}x{w} digit centred at {(r, c)} does not fit in {shape}")
        out[:, top:top + h, left:left + w] = digits[:, n]
    return out


def window_kinds(map_shape: tuple[int, int], centres: Sequence[tuple[int, int]], stride: int = 4,
                 size: int = 16, digit: int = 8) -> np.ndarray:
    """What each window of a (rows, cols) score map holds, for ``digit`` x ``digit`` digits centred at
    ``centres``: ``kinds[i, j] = (k, offset)`` with ``k`` the index of a digit lying wholly inside window (i, j)
    and ``offset`` the largest distance, in pixels along a row or a column, between the window's centre and the
    digit's (0: centred); ``(-1, 0)`` for an empty window (no digit pixel in it) and ``(-2, 0)`` for one that holds
    part of a digit. Window (i, j) covers rows ``stride*i .. stride*i + size`` (the same for columns)."""
    rows, cols = map_shape
    kinds = np.zeros((rows, cols, 2), int)
    half = digit / 2
    for i in range(rows):
        for j in range(cols):
            r0, c0 = stride * i, stride * j
            inside = [k for k, (r, c) in enumerate(centres)
                      if r0 <= r - half and r + half <= r0 + size and c0 <= c - half and c + half <= c0 + size]
            overlap = any(r0 < r + half and r - half < r0 + size and c0 < c + half and c - half < c0 + size
                          for r, c in centres)
            if inside:
                r, c = centres[inside[0]]
                kinds[i, j] = inside[0], int(max(abs(r0 + size / 2 - r), abs(c0 + size / 2 - c)))
            else:
                kinds[i, j] = (-2 if overlap else -1), 0
    return kinds


def window_outcomes(scores: np.ndarray, labels: np.ndarray, kinds: np.ndarray,
                    confident: float = 0.5) -> dict[str, float]:
    """How right a batch of score maps is. ``scores`` (B, rows, cols, C) from :func:`class_score_map`;
    ``labels`` (B, K) the digits' classes; ``kinds`` from :func:`window_kinds`. Returns the accuracy of the
    arg-max at the windows centred on a digit ("centred") and at those holding a whole digit off centre
    ("off centre"), and the share of empty windows whose largest softmax probability exceeds ``confident``
    ("empty, confident": windows with nothing in them that the classifier still calls a digit)."""
    guess = scores.argmax(-1)                                                # (B, rows, cols)
    z = scores - scores.max(-1, keepdims=True)
    top = (np.exp(z) / np.exp(z).sum(-1, keepdims=True)).max(-1)             # (B, rows, cols)
    k, off = kinds[..., 0], kinds[..., 1]

    def right(sel):  # nan where the map has no such window
        hits = [guess[:, i, j] == labels[:, k[i, j]] for i, j in zip(*np.nonzero(sel))]
        return float(np.mean(hits)) if hits else float("nan")

    empty = top[:, k == -1]
    return {"centred": right((k >= 0) & (off == 0)), "off centre": right((k >= 0) & (off > 0)),
            "empty, confident": float((empty > confident).mean()) if empty.size else float("nan")}


# ----------------------------------------------------------------------------------------------------------
# Figures
def plot_spread_bars(groups: Mapping[str, Mapping[str, Spread]], ylabel: str = "test accuracy",
                     title: str = "", chance: float | None = None, figsize=(9, 3.4)) -> Figure:
    """Grouped bars of ``{group: {method: Spread}}``: mean per seed set, error bar = sample sd over seeds."""
    fig, ax = plt.subplots(figsize=figsize)
    methods = list(next(iter(groups.values())))
    width = 0.8 / len(methods)
    for j, m in enumerate(methods):
        xs = np.arange(len(groups)) + (j - (len(methods) - 1) / 2) * width
        means = [groups[g][m].mean for g in groups]
        sds = [groups[g][m].sd for g in groups]
        ax.bar(xs, means, width * 0.95, yerr=sds, capsize=3, label=m)
    ax.set_xticks(np.arange(len(groups)), list(groups), fontsize=9)
    if chance is not None:
        ax.axhline(chance, color="gray", ls=":", lw=1, label="chance")
    ax.set_ylabel(ylabel, fontsize=9)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=9, loc="upper left")
    fig.tight_layout()
    return fig


def plot_spectra(spectra: Mapping[str, Sequence[np.ndarray]], top: int = 20, figsize=(6, 3.4)) -> Figure:
    """Eigenvalues of the feature correlation matrix (largest first, the first ``top``) per network kind: the
    mean over seeds as a line, ± one sample sd as a band; log scale."""
    fig, ax = plt.subplots(figsize=figsize)
    for name, evs in spectra.items():
        mean, sd = stack([e[:top] for e in evs])  # (top,) each
        ranks = np.arange(1, top + 1)
        ax.plot(ranks, mean, marker="o", ms=3, label=name)
        ax.fill_between(ranks, np.maximum(mean - sd, 1e-3), mean + sd, alpha=0.25)
    ax.set_yscale("log")
    ax.set_xlabel("principal direction (largest first)", fontsize=9)
    ax.set_ylabel("variance of the standardised features", fontsize=9)
    ax.set_xticks(range(1, top + 1, 2))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


def plot_score_map(image: np.ndarray, maps: Mapping[str, np.ndarray], classes: Sequence[str],
                   centres: Sequence[tuple[int, int]], labels: Sequence[int], stride: int = 4, size: int = 16,
                   figsize=(11, 3.4)) -> Figure:
    """One panel per score map in ``maps`` ({title: (rows, cols, C) scores}), side by side: the large image
    ``image`` (H, W) in grey, and at the centre of every window the class its scores pick (the arg-max), coloured
    by whether it is right: green where a whole digit lies in the window and the pick names it, red where it names
    another class, grey where the window holds no digit or only part of one (no right answer). Rings mark the
    digits' centres (``centres`` [(row, col)], classes ``labels``). A window at map position (i, j) covers image
    rows stride*i .. stride*i + size (the same for columns), so its centre is at stride*i + size/2."""
    from matplotlib import patheffects
    from matplotlib.lines import Line2D

    kinds = window_kinds(next(iter(maps.values())).shape[:2], centres, stride, size)
    colours = {"right": "#1a9641", "wrong": "#d7191c", "none": "#6a6a6a"}
    fig, axes = plt.subplots(1, len(maps), figsize=figsize, squeeze=False)
    for ax, (title, scores) in zip(axes[0], maps.items()):
        ax.imshow(image, cmap="gray_r", vmin=0, vmax=1.5 * float(image.max()))
        guess = scores.argmax(-1)
        for i in range(guess.shape[0]):
            for j in range(guess.shape[1]):
                k = kinds[i, j, 0]
                kind = "none" if k < 0 else ("right" if guess[i, j] == labels[k] else "wrong")
                ax.text(stride * j + size / 2 - 0.5, stride * i + size / 2 - 0.5, classes[guess[i, j]],
                        ha="center", va="center", fontsize=9, fontweight="bold", color=colours[kind],
                        path_effects=[patheffects.withStroke(linewidth=2, foreground="white")])
        for (r, c) in centres:
            ax.plot(c - 0.5, r - 0.5, "o", ms=17, mfc="none", mec="#2c7bb6", mew=1.5)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Line2D([], [], ls="", marker="$5$", ms=9, color=colours["right"], label="a whole digit in the "
                      "window, named right"),
               Line2D([], [], ls="", marker="$5$", ms=9, color=colours["wrong"], label="... named wrong"),
               Line2D([], [], ls="", marker="$5$", ms=9, color=colours["none"], label="no whole digit: no right "
                      "answer"),
               Line2D([], [], ls="", marker="o", ms=10, mfc="none", mec="#2c7bb6", mew=1.5, label="a digit's "
                      "centre")]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=9, frameon=False)
    fig.suptitle(f"the class each {size}x{size} window (stride {stride}) picks, written at the window's centre",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


# ----------------------------------------------------------------------------------------------------------
# The idea in one picture
def plot_pipeline(feature_dim: int = 64, input_label: str = "image\n16x16x1", frozen_label: str = "",
                  num_classes: int = 5, figsize: tuple[float, float] = (10, 3.0)) -> Figure:
    """input -> frozen layers -> bottleneck features (cached) -> new last layer, as boxes and arrows."""
    fig, ax = plt.subplots(figsize=figsize)
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 3)
    ax.axis("off")
    frozen_label = frozen_label or "frozen layers\nconv-pool-conv-pool-conv-avgpool\n(trained on digits 0-4)"
    boxes = [(0.2, input_label, "#dddddd"), (2.3, frozen_label, "#a6c8e8"),
             (5.2, f"bottleneck\nfeatures\n({feature_dim} numbers)", "#f5d28c"),
             (7.6, f"new last layer\nBatchNorm (no scale, shift)\n+ Linear({feature_dim}->{num_classes})\n(trained)",
              "#9fd89f")]
    widths = [1.6, 2.4, 1.9, 2.2]
    for (x, label, color), w in zip(boxes, widths):
        ax.add_patch(FancyBboxPatch((x, 1.3), w, 1.3, boxstyle="round,pad=0.05", fc=color, ec="k"))
        ax.text(x + w / 2, 1.95, label, ha="center", va="center", fontsize=9)
    for (x0, _, _), w0, (x1, _, _) in zip(boxes[:-1], widths[:-1], boxes[1:]):
        ax.add_patch(FancyArrowPatch((x0 + w0 + 0.07, 1.95), (x1 - 0.07, 1.95), arrowstyle="-|>",
                                     mutation_scale=14))
    ax.add_patch(FancyBboxPatch((5.35, 0.15), 1.6, 0.7, boxstyle="round,pad=0.05", fc="white", ec="k", ls="--"))
    ax.text(6.15, 0.5, "cache on disk\n(computed once)", ha="center", va="center", fontsize=9)
    ax.add_patch(FancyArrowPatch((6.15, 1.23), (6.15, 0.92), arrowstyle="<|-|>", mutation_scale=10))
    ax.text(3.5, 0.5, "frozen, no gradient flows here:\nrun once per image", ha="center", va="center",
            fontsize=9, style="italic")
    ax.add_patch(FancyArrowPatch((3.5, 0.85), (3.5, 1.23), arrowstyle="-|>", mutation_scale=10, color="0.3"))
    fig.tight_layout()
    return fig
