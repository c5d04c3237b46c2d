"""Figures for notebook 06 (incremental learning). Each function takes data and returns a Figure; none reads
globals or calls ``plt.show()``."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

SCENARIOS = ("class-IL", "task-IL")
SPLITS = ("old", "new", "all")


def _mean_sd(v):
    """A Spread, a (mean, sd) pair or a plain number -> (mean, sd)."""
    if hasattr(v, "mean") and hasattr(v, "sd"):
        return float(v.mean), float(v.sd)
    if isinstance(v, tuple):
        return float(v[0]), float(v[1])
    return float(v), 0.0


def plot_forgetting(before: np.ndarray, after: np.ndarray, confusion: np.ndarray, old: Sequence[int],
                    class_names: Sequence[str], before_sd: np.ndarray | None = None,
                    after_sd: np.ndarray | None = None, n_seeds: int = 1,
                    figsize: tuple[float, float] = (10, 3.4)) -> Figure:
    """Left: each class's test accuracy before (old model) and after naive fine-tuning, means over seeds with sd
    error bars (NaN bars are skipped). Right: the confusion matrix after (rows: true class, columns: predicted),
    summed over the seeds and row-normalised, with its colour bar."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=figsize, gridspec_kw={"width_ratios": [1.4, 1]})
    k = np.arange(len(class_names))
    err = dict(capsize=2, error_kw={"lw": 0.8})
    ax.bar(k - 0.2, np.nan_to_num(before), 0.4, yerr=None if before_sd is None else np.nan_to_num(before_sd),
           label="before (old model)", **err)
    ax.bar(k + 0.2, after, 0.4, yerr=after_sd, label="after naive fine-tuning", **err)
    ax.axvspan(min(old) - 0.5, max(old) + 0.5, color="0.9", zorder=-1)
    ax.text(np.mean(old), 1.04, "old classes", ha="center", fontsize=9)
    ax.set_xticks(k)
    ax.set_xticklabels(class_names)
    ax.set_ylim(0, 1.14)
    ax.set_xlabel("class")
    ax.set_ylabel(f"test accuracy (mean of {n_seeds} seeds, ± sd)" if n_seeds > 1 else "test accuracy")
    ax.legend(fontsize=9, loc="lower right")
    rows = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    im = ax2.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax2, fraction=0.046, pad=0.04, label="fraction of the row")
    ax2.set_xticks(k)
    ax2.set_yticks(k)
    ax2.set_xticklabels(class_names)
    ax2.set_yticklabels(class_names)
    ax2.set_xlabel("predicted class")
    ax2.set_ylabel("true class")
    ax2.set_title(f"after naive fine-tuning ({n_seeds} seeds pooled)" if n_seeds > 1 else "after naive fine-tuning",
                  fontsize=10)
    fig.tight_layout()
    return fig


def plot_strategies(acc: Mapping[str, Mapping[str, Mapping[str, object]]], memory_kib: Mapping[str, float],
                    chance_class_il: float | None = 0.5, figsize: tuple[float, float] = (12, 4.0)) -> Figure:
    """One panel per scenario (class-IL, task-IL): bars of old / new / all accuracy for each strategy,
    ``acc[strategy][scenario][split]`` a :class:`course.seeds.Spread` (mean, sd error bar) or a number; each bar
    carries its value (a zero-height bar stays visible). Strategy labels carry the memory each needs (KiB). On
    the class-IL panel only, a dashed line at ``chance_class_il``: the all-class accuracy of a model that knows
    only the last of two equal tasks (it means nothing when the task label is given)."""
    names = list(acc)
    fig, axes = plt.subplots(1, len(SCENARIOS), figsize=figsize, sharey=True)
    x = np.arange(len(names))
    for ax, scenario in zip(axes, SCENARIOS):
        for i, split in enumerate(SPLITS):
            ms = [_mean_sd(acc[n][scenario][split]) for n in names]
            m, sd = np.array(ms).T
            bars = ax.bar(x + (i - 1) * 0.27, m, 0.27, yerr=sd, capsize=2, error_kw={"lw": 0.8}, label=split)
            for b, v, e in zip(bars, m, sd):
                ax.text(b.get_x() + b.get_width() / 2, v + e + 0.015, f"{v:.2f}", ha="center", va="bottom",
                        fontsize=8, rotation=90)
        ax.set_xticks(x)
        ax.set_xticklabels([f"{n}\n{memory_kib[n]:.0f} KiB" for n in names], fontsize=9)
        ax.set_title(f"{scenario}: " + ("no task label, argmax over all classes" if scenario == "class-IL"
                                         else "task label given, argmax within the task"), fontsize=10)
        if scenario == "class-IL" and chance_class_il is not None:
            ax.axhline(chance_class_il, color="0.5", lw=0.8, ls="--", label="knows one task of two")
        ax.set_ylim(0, 1.3)
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_ylabel("test accuracy (mean ± sd over seeds)")
    axes[0].legend(fontsize=9, title="classes", title_fontsize=9, loc="upper left", ncol=4)
    fig.tight_layout()
    return fig


def plot_sweep(xs: Sequence[float], acc: Sequence[Mapping[str, Mapping[str, object]]], xlabel: str,
               reference: Mapping[str, object] | None = None, reference_label: str = "",
               scenario: str = "class-IL", title: str = "", log: bool = True,
               figsize: tuple[float, float] = (6.4, 3.4)) -> Figure:
    """Old / new / all accuracy in ``scenario`` against a hyperparameter (e.g. EWC's lambda), values Spreads
    (mean with a ± sd band) or numbers; ``reference`` (another strategy's {"old","new","all"}) as dotted lines."""
    fig, ax = plt.subplots(figsize=figsize)
    for split, color in zip(SPLITS, ("C0", "C1", "C2")):
        m, sd = np.array([_mean_sd(a[scenario][split]) for a in acc]).T
        ax.plot(xs, m, marker="o", ms=4, color=color, label=split)
        ax.fill_between(xs, m - sd, m + sd, color=color, alpha=0.2, lw=0)
        if reference is not None:
            ax.axhline(_mean_sd(reference[split])[0], color=color, ls=":", lw=1)
    if reference is not None:
        ax.plot([], [], color="0.4", ls=":", label=reference_label)
    if log:
        ax.set_xscale("log")
    ax.set_xticks(list(xs))
    ax.set_ylim(0, 1.05)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{scenario} test accuracy")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="lower right")
    fig.tight_layout()
    return fig


def plot_accuracy_matrices(mats: Mapping[str, tuple[np.ndarray, np.ndarray]], task_names: Sequence[str],
                           figsize: tuple[float, float] = (13, 3.4)) -> Figure:
    """One panel per strategy: the (T, T) class-IL accuracy matrix, mean over seeds (row t: after learning task
    t; column j: test images of task j), each cell printed as mean and sd. One shared colour scale, one colour
    bar. Cells above the diagonal (tasks not yet seen) are blank."""
    fig, axes = plt.subplots(1, len(mats), figsize=figsize, sharey=True)
    axes = np.atleast_1d(axes)
    T = len(task_names)
    for ax, (name, (m, sd)) in zip(axes, mats.items()):
        im = ax.imshow(np.ma.masked_invalid(m), cmap="viridis", vmin=0, vmax=1)
        for t in range(T):
            for j in range(t + 1):
                ax.text(j, t, f"{m[t, j]:.2f}\n±{sd[t, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if m[t, j] < 0.6 else "black")
        ax.set_xticks(range(T))
        ax.set_xticklabels(task_names, fontsize=9, rotation=45)
        ax.set_yticks(range(T))
        ax.set_yticklabels([f"after {i + 1}" for i in range(T)], fontsize=9)
        ax.set_xlabel("test images of task")
        ax.set_title(name, fontsize=10)
    axes[0].set_ylabel("after learning task")
    fig.colorbar(im, ax=list(axes), fraction=0.02, pad=0.02, label="class-IL accuracy")
    return fig
