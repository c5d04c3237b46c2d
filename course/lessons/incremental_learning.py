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

import numpy as np
import optax
from flax import nnx

from course import incremental as inc
from course.data import Dataset
from course.seeds import Spread
from course.training import fit, predict

SCENARIOS = ("class-IL", "task-IL")
SPLITS = ("old", "new", "all")

# van de Ven & Tolias, "Three scenarios for continual learning" (2019, arXiv:1904.07734), Table 4, split MNIST
# (5 tasks of 2 digits, an MLP of 2 x 400 units, 2,000 iterations per task, means over 20 runs), average test
# accuracy over the tasks after the last one, rounded (about: check the paper's table before quoting digits). Their task-IL models are multi-headed (one output layer per task),
# their class-IL models single-headed; "replay" is their generative replay (DGR).
PUBLISHED_SPLIT_MNIST = {
    "naive": {"class-IL": 0.20, "task-IL": 0.87},
    "EWC": {"class-IL": 0.20, "task-IL": 0.99},
    "LwF": {"class-IL": 0.22, "task-IL": 0.99},
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
    a = np.stack([r.task_acc if task_il else r.acc for r in results])  # (seeds, T, T)
    return a.mean(0), a.std(0, ddof=1) if len(a) > 1 else np.zeros(a.shape[1:])


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
