"""Notebook 06 (adding classes without forgetting): the experiment drivers, over seeds, and the published numbers.

Every comparison in the notebook is run at the seeds of :func:`course.seeds.seeds` and summarised as
``mean ± sd`` (:class:`course.seeds.Spread`). Two experiments:

* :func:`two_tasks`: digits 0-4, then 5-9 (each seed: train the old model, save it to disk, reload it, grow the
  head 5 -> 10, run every strategy);
* :func:`five_tasks`: the split-digits sequence [0, 1], [2, 3], ..., [8, 9] (the shape of split MNIST, van de Ven
  & Tolias 2019), every increment reloading the previous model from disk (:func:`course.incremental.run_sequence`),
  giving one accuracy matrix per strategy and seed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import optax
from matplotlib.figure import Figure
from flax import nnx

from course import incremental as inc
from course.data import Dataset
from course.seeds import Spread, stack
from course.training import fit, predict

SCENARIOS = ("class-IL", "task-IL")
SPLITS = ("old", "new", "all")

# van de Ven & Tolias, "Three scenarios for continual learning" (2019, arXiv:1904.07734), Table 4, split MNIST
# (5 tasks of 2 digits, an MLP of 2 x 400 units, 2,000 iterations per task, means over 20 runs), average test
# accuracy over the tasks after the last one, rounded to two digits. Their task-IL models are multi-headed (one
# output layer per task), their class-IL models single-headed; "replay" is their generative replay (DGR). The
# notebook's five-task sequence runs naive fine-tuning, EWC and rehearsal, so LwF's entry is not listed.
PUBLISHED_SPLIT_MNIST = {
    "naive": {"class-IL": 0.20, "task-IL": 0.87},
    "EWC": {"class-IL": 0.20, "task-IL": 0.99},
    "replay": {"class-IL": 0.90, "task-IL": 0.99},
    "joint": {"class-IL": 0.98, "task-IL": 1.00},
}


def spreads(rows: Sequence[Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, Spread]]:
    """``[acc per seed]`` (each ``{scenario: {split: value}}``) -> ``{scenario: {split: Spread}}``."""
    return {sc: {sp: Spread(tuple(float(r[sc][sp]) for r in rows)) for sp in rows[0][sc]} for sc in rows[0]}


def format_spread_table(acc: Mapping[str, Mapping[str, Mapping[str, Spread]]],
                        memory_kib: Mapping[str, float] | None = None, digits: int = 3) -> str:
    """One row per strategy: old / new / all accuracy (mean ± sd over seeds) in both scenarios [, memory]."""
    w = 2 * digits + 7
    head = f"{'strategy':<18} " + "  ".join(f"{sc + ' ' + sp:>{w}}" for sc in SCENARIOS for sp in SPLITS)
    if memory_kib:
        head += f"  {'memory':>10}"
    lines = [head, "-" * len(head)]
    for name, a in acc.items():
        line = f"{name:<18} " + "  ".join(f"{format(a[sc][sp], f'.{digits}f'):>{w}}" for sc in SCENARIOS for sp in SPLITS)
        if memory_kib:
            line += f"  {memory_kib[name]:>6.1f} KiB"
        lines.append(line)
    return "\n".join(lines)


def train_old(build: Callable[[int, int], nnx.Module], task: Dataset, classes: Sequence[str], directory: Path, *,
              seed: int, epochs: int, tx: optax.GradientTransformation) -> tuple[nnx.Module, float]:
    """Train ``build(len(classes), seed)`` on ``task``, save it to ``directory`` (weights + label space) and
    return ``(model, test accuracy)``. What a user does before the new data exist."""
    model = build(len(classes), seed)
    hist = fit(model, task, epochs=epochs, tx=tx, seed=seed, verbose=False)
    inc.save_weights(directory, model, classes)
    return model, hist.test_accuracy[-1]


def first_task(build: Callable[[int, int], nnx.Module], data: Dataset, tasks: Sequence[Sequence[int]],
               directory: Path, *, seed: int, epochs: int, tx: optax.GradientTransformation,
               outputs: int) -> float:
    """The five-task sequence's starting point: ``build(outputs, seed)`` (all the sequence's outputs allocated)
    trained on ``tasks[0]`` with the other outputs masked out, saved to ``directory``; returns its accuracy."""
    model = build(outputs, seed)
    task = data.subset(tasks[0])
    params = inc.loss_params(model, [], outputs, active=tasks[0])
    fit(model, task, epochs=epochs, tx=tx, seed=seed, verbose=False, loss_fn=inc.incremental_loss, loss_params=params)
    inc.save_weights(directory, model, [data.classes[c] for c in tasks[0]])
    z = predict(model, task.x_test)[:, :len(tasks[0])]
    return float((z.argmax(-1) == task.y_test).mean())


def matrix_spread(results: Sequence[inc.SequenceResult], task_il: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample sd over seeds of the (T, T) accuracy matrices."""
    return stack([r.task_acc if task_il else r.acc for r in results])  # (seeds, T, T) -> (T, T) each


def format_sequence_table(results: Mapping[str, Sequence[inc.SequenceResult]],
                          published: Mapping[str, Mapping[str, float]], names: Mapping[str, str],
                          joint: Sequence[tuple[float, float]] | None = None) -> str:
    """Per strategy: class-IL average accuracy after the last task, forgetting, task-IL average (mean ± sd over
    seeds), beside the published split-MNIST class-IL / task-IL numbers (``names`` maps ours to theirs).
    ``joint``: (class-IL, task-IL) average of a model trained on all tasks at once, per seed (no forgetting)."""
    head = (f"{'strategy':<18} {'class-IL after task 5':>21} {'forgetting':>13} {'task-IL after task 5':>20}"
            f"   {'published class-IL':>18} {'task-IL':>7}")
    lines = [head, "-" * len(head)]
    for name, rs in results.items():
        avg = Spread(tuple(r.average for r in rs))
        forg = Spread(tuple(r.forgetting for r in rs))
        tavg = Spread(tuple(r.task_average for r in rs))
        p = published.get(names.get(name, name))
        pub = f"{p['class-IL']:>18.2f} {p['task-IL']:>7.2f}" if p else f"{'-':>18} {'-':>7}"
        lines.append(f"{name:<18} {format(avg, '.3f'):>21} {format(forg, '.3f'):>13} {format(tavg, '.3f'):>20}   {pub}")
    if joint is not None:
        avg, tavg = (Spread(tuple(float(j[i]) for j in joint)) for i in (0, 1))
        p = published["joint"]
        lines.append(f"{'joint (all data)':<18} {format(avg, '.3f'):>21} {'-':>13} {format(tavg, '.3f'):>20}   {p['class-IL']:>18.2f} "
                     f"{p['task-IL']:>7.2f}")
    return "\n".join(lines)


def wrong_label_space(grown: nnx.Module, new: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                      n_old: int, *, epochs: int, seed: int, tx: optax.GradientTransformation) -> dict[str, float]:
    """The pitfall: fine-tune ``grown`` on new-only data whose labels are 0..k-1 (their own label space) instead
    of n_old..n_old+k-1. Returns, on the new classes' test images, the fraction predicted as the old outputs
    0..k-1 (which the labels taught to mean the new classes), ``"old"``, and as the new outputs n_old.. (never
    trained), ``"new"``."""
    x, y_local = new
    n_out = grown.head.kernel.shape[-1]  # the shared loss with every weight 0: the sequence's compiled step
    fit(grown, (x, y_local), epochs=epochs, tx=tx, seed=seed, verbose=False, loss_fn=inc.incremental_loss,
        loss_params=inc.loss_params(grown, range(n_old), n_out))
    xt, yt_local = test
    pred = predict(grown, xt).argmax(-1)
    k = int(y_local.max()) + 1
    return {"old": float((pred < k).mean()), "new": float((pred >= n_old).mean())}


__all__ = ["PUBLISHED_SPLIT_MNIST", "spreads", "format_spread_table", "train_old", "first_task", "matrix_spread",
           "format_sequence_table", "wrong_label_space"]


# ----------------------------------------------------------------------------------------------------------
# Figures: each function takes data and returns a Figure; none reads globals or calls plt.show().

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
            for b, v, e in zip(bars, m, sd):  # in the bar's colour, so that a 0.00 is not read as a tick label
                ax.text(b.get_x() + b.get_width() / 2, v + e + 0.015, f"{v:.2f}", ha="center", va="bottom",
                        fontsize=9, rotation=90, color=b.get_facecolor())
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
               figsize: tuple[float, float] = (8.4, 3.4)) -> Figure:
    """Old / new / all accuracy in ``scenario`` against a hyperparameter (e.g. EWC's lambda), values Spreads
    (mean with a ± sd band) or numbers; ``reference`` (another strategy's {"old","new","all"}) as dotted lines in
    the colour of the same split, each named in the legend."""
    fig, ax = plt.subplots(figsize=figsize)
    for split, color in zip(SPLITS, ("C0", "C1", "C2")):
        m, sd = np.array([_mean_sd(a[scenario][split]) for a in acc]).T
        ax.plot(xs, m, marker="o", ms=4, color=color, label=split)
        ax.fill_between(xs, m - sd, m + sd, color=color, alpha=0.2, lw=0)
        if reference is not None:
            ax.axhline(_mean_sd(reference[split])[0], color=color, ls=":", lw=1.2,
                       label=f"{reference_label}, {split}")
    if log:
        ax.set_xscale("log")
    ax.set_xticks(list(xs))
    ax.set_ylim(0, 1.05)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{scenario} test accuracy")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="center left", bbox_to_anchor=(1.01, 0.5))
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
                ax.text(j, t, f"{m[t, j]:.2f}\n±{sd[t, j]:.2f}", ha="center", va="center", fontsize=9,
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
