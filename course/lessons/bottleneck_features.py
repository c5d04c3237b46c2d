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
                  size: int = 16) -> np.ndarray:
    """The reference for :func:`class_score_map`: every ``size`` x ``size`` crop at ``stride`` run through the
    network separately (each crop zero-padded at its own border). Returns (B, rows, cols, C)."""
    net.eval()
    probe.eval()
    b, hh, ww, _ = x.shape
    rows, cols = (hh - size) // stride + 1, (ww - size) // stride + 1
    crops = np.stack([x[:, i * stride:i * stride + size, j * stride:j * stride + size]
                      for i in range(rows) for j in range(cols)], axis=1)  # (B, rows*cols, size, size, 1)
    feats = net.intermediates(jnp.asarray(crops.reshape(-1, size, size, x.shape[-1])))[1]["gap"]
    return np.asarray(probe(feats)).reshape(b, rows, cols, -1)


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


def plot_score_map(image: np.ndarray, scores: np.ndarray, classes: Sequence[str], stride: int = 4,
                   size: int = 16, figsize=(10, 4.6)) -> Figure:
    """The large image (top), then one panel per class (bottom): its score at every window position, on one
    shared colour scale with a colorbar. ``image`` (H, W); ``scores`` (h, w, C) from :func:`class_score_map`;
    a window at map position (i, j) covers image rows stride*i .. stride*i + size (same for columns)."""
    c = scores.shape[-1]
    fig = plt.figure(figsize=figsize)
    grid = fig.add_gridspec(2, c, height_ratios=[1.3, 1], hspace=0.35)
    top = fig.add_subplot(grid[0, :])
    top.imshow(image, cmap="gray")
    top.set_title(f"input: every {size}x{size} window at stride {stride} is scored in one pass", fontsize=9)
    top.set_xticks([])
    top.set_yticks([])
    vmin, vmax = float(scores.min()), float(scores.max())
    axes = [fig.add_subplot(grid[1, k]) for k in range(c)]
    for k, ax in enumerate(axes):
        im = ax.imshow(scores[..., k], cmap="viridis", vmin=vmin, vmax=vmax)
        ax.set_title(f"score of '{classes[k]}'", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    cb = fig.colorbar(im, ax=axes, fraction=0.025, pad=0.02)
    cb.ax.tick_params(labelsize=9)
    cb.set_label("class score (logit)", fontsize=9)
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
    ax.text(3.5, 0.5, "no gradient flows here:\nrun once per image", ha="center", va="center", fontsize=9,
            style="italic")
    fig.tight_layout()
    return fig
