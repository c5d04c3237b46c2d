"""Figures for notebook 06 (incremental learning). Each function takes data and returns a Figure; none reads
globals or calls ``plt.show()``."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

SCENARIOS = ("class-IL", "task-IL")
SPLITS = ("old", "new", "all")


def plot_forgetting(before: np.ndarray, after: np.ndarray, confusion: np.ndarray, old: Sequence[int],
                    class_names: Sequence[str], figsize: tuple[float, float] = (10, 3.4)) -> Figure:
    """Left: each class's test accuracy before (old model) and after naive fine-tuning (NaN bars are skipped).
    Right: the confusion matrix after (rows: true class, columns: predicted), row-normalised."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=figsize, gridspec_kw={"width_ratios": [1.4, 1]})
    k = np.arange(len(class_names))
    ax.bar(k - 0.2, np.nan_to_num(before), 0.4, label="before (old model)")
    ax.bar(k + 0.2, after, 0.4, label="after naive fine-tuning")
    ax.axvspan(min(old) - 0.5, max(old) + 0.5, color="0.9", zorder=-1)
    ax.text(np.mean(old), 1.04, "old classes", ha="center", fontsize=8)
    ax.set_xticks(k)
    ax.set_xticklabels(class_names)
    ax.set_ylim(0, 1.12)
    ax.set_xlabel("class")
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=8, loc="lower right")
    rows = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    ax2.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax2.set_xticks(k)
    ax2.set_yticks(k)
    ax2.set_xticklabels(class_names)
    ax2.set_yticklabels(class_names)
    ax2.set_xlabel("predicted class")
    ax2.set_ylabel("true class")
    ax2.set_title("after naive fine-tuning", fontsize=10)
    fig.tight_layout()
    return fig


def plot_strategies(acc: Mapping[str, Mapping[str, Mapping[str, float]]], memory_kib: Mapping[str, float],
                    figsize: tuple[float, float] = (11, 3.6)) -> Figure:
    """One panel per scenario (class-IL, task-IL): bars of old / new / all accuracy for each strategy;
    ``acc[strategy][scenario][split]``. Strategy labels carry the memory each needs (KiB). The dashed line at
    0.5 is the all-class accuracy of a model that knows only one of two equal tasks."""
    names = list(acc)
    fig, axes = plt.subplots(1, len(SCENARIOS), figsize=figsize, sharey=True)
    x = np.arange(len(names))
    for ax, scenario in zip(axes, SCENARIOS):
        for i, split in enumerate(SPLITS):
            ax.bar(x + (i - 1) * 0.27, [acc[n][scenario][split] for n in names], 0.27, label=split)
        ax.set_xticks(x)
        ax.set_xticklabels([f"{n}\n{memory_kib[n]:.0f} KiB" for n in names], fontsize=8)
        ax.set_title(f"{scenario}: " + ("no task label, argmax over all classes" if scenario == "class-IL"
                                         else "task label given, argmax within the task"), fontsize=10)
        ax.axhline(0.5, color="0.6", lw=0.8, ls="--")  # all-class accuracy of a model that knows one of two tasks
        ax.text(len(names) - 0.55, 0.51, "one task of two", ha="right", va="bottom", fontsize=7, color="0.4")
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_ylabel("test accuracy")
    axes[0].legend(fontsize=8, title="classes", title_fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


def plot_sweep(xs: Sequence[float], acc: Sequence[Mapping[str, Mapping[str, float]]], xlabel: str,
               reference: Mapping[str, float] | None = None, reference_label: str = "",
               scenario: str = "class-IL", title: str = "", log: bool = True,
               figsize: tuple[float, float] = (6, 3.2)) -> Figure:
    """Old / new / all accuracy in ``scenario`` against a hyperparameter (e.g. EWC's lambda); ``reference``
    (another strategy's {"old","new","all"}) is drawn as dotted lines."""
    fig, ax = plt.subplots(figsize=figsize)
    for split, color in zip(SPLITS, ("C0", "C1", "C2")):
        ax.plot(xs, [a[scenario][split] for a in acc], marker="o", ms=4, color=color, label=split)
        if reference is not None:
            ax.axhline(reference[split], color=color, ls=":", lw=1)
    if reference is not None:
        ax.plot([], [], color="0.4", ls=":", label=reference_label)
    if log:
        ax.set_xscale("log")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{scenario} test accuracy")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig
