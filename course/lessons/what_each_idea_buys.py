"""Notebook 08 (what each architectural idea buys): one small member of every family the course built, trained on
the same data with the same budget, counted, and compared as accuracy against MACs and parameters.

The families and the papers they come from:

* :class:`~course.models.simple.MLP` and :class:`~course.models.simple.SmallCNN`: locality, weight sharing and
  pooling (LeCun et al., "Gradient-based learning applied to document recognition", 1998; notebook 01).
* :class:`InceptionNet`: a 3x3 stem and two Inception modules with 1x1 reductions (Szegedy et al., "Going deeper
  with convolutions", CVPR 2015, Fig. 2b) or without them (Fig. 2a, :class:`~course.models.inception.NaiveInception`),
  on the same filter counts (notebook 02).
* :class:`~course.models.resnet.ResNet` with the CIFAR stem (He et al., "Deep Residual Learning for Image
  Recognition", CVPR 2016, Sec. 4.2): basic blocks with and without shortcuts (the plain network), and bottleneck
  blocks (Fig. 5 right; notebook 04).

Every builder takes ``rngs`` and returns an NNX module for (B, H, W, 1) inputs; :data:`FAMILIES` names each
member of the study and how to build it. :func:`pareto_front` marks the models no other model beats on both
accuracy and cost. Figures are returned, never shown.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
from typing import Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from flax import nnx
from matplotlib.figure import Figure

from course import bench, claims, counting, data, training
from course.models.inception import InceptionNet
from course.models.resnet import BasicBlock, BottleneckBlock, ResNet, set_shortcuts
from course.models.simple import MLP, SmallCNN
from course.seeds import Spread

FONT = 10  # points: every label of the figures here, at the stored size


# ----------------------------------------------------------------------------------------------------------
# The Inception network of the study
# ----------------------------------------------------------------------------------------------------------
# The members of the study
@dataclasses.dataclass(frozen=True)
class Member:
    """One model of the study: its ``name`` (as printed), ``family`` (one colour on the plots), the idea it adds,
    and ``build(input_shape, rngs) -> nnx.Module``. ``plain``: a gated ResNet trained with its shortcuts off, the
    plain network of the same depth; it runs the ResNet's compiled train step (the gate is data, not structure)."""

    name: str
    family: str
    build: Callable[..., nnx.Module]
    plain: bool = False


def _mlp(hidden):
    return lambda shape, rngs: MLP(int(np.prod(shape)), 10, hidden, rngs=rngs)


def _cnn(channels):
    return lambda shape, rngs: SmallCNN(shape[-1], 10, channels, rngs=rngs)


def _inception(stem, rows, reduce):
    return lambda shape, rngs: InceptionNet(shape[-1], 10, stem, rows, reduce, rngs=rngs)


def _resnet(n, block, widths):
    # one name for a ResNet and its plain twin: the name is part of the module's static structure, and the two
    # share one compiled train step only if that structure is the same
    return lambda shape, rngs: ResNet((n, n, n), block, 10, input_shape=shape, widths=widths, stem="cifar",
                                      shortcut="zeropad", gated=True, name=f"{block.__name__}x{n}", rngs=rngs)


def members() -> list[Member]:
    """The study's models, two sizes per family (``input_shape`` is chosen when they are built)."""
    row_s = ((4, 4, 8, 2, 4, 4), (8, 8, 16, 2, 4, 4))
    row_l = ((8, 8, 16, 4, 8, 8), (16, 16, 32, 4, 8, 8))
    return [
        Member("MLP-64", "MLP", _mlp((64,))),
        Member("MLP-256", "MLP", _mlp((256,))),
        Member("CNN-8", "CNN", _cnn((8, 16, 32))),
        Member("CNN-16", "CNN", _cnn((16, 32, 64))),
        Member("Inception-naive-S", "Inception, no 1x1 reductions", _inception(8, row_s, False)),
        Member("Inception-naive-L", "Inception, no 1x1 reductions", _inception(16, row_l, False)),
        Member("Inception-S", "Inception", _inception(8, row_s, True)),
        Member("Inception-L", "Inception", _inception(16, row_l, True)),
        Member("plain-8", "plain deep", _resnet(1, BasicBlock, (8, 16, 32)), plain=True),
        Member("plain-14", "plain deep", _resnet(2, BasicBlock, (8, 16, 32)), plain=True),
        Member("ResNet-8", "ResNet, basic", _resnet(1, BasicBlock, (8, 16, 32))),
        Member("ResNet-14", "ResNet, basic", _resnet(2, BasicBlock, (8, 16, 32))),
        Member("ResNet-bneck-11", "ResNet, bottleneck", _resnet(1, BottleneckBlock, (4, 8, 16))),
        Member("ResNet-bneck-20", "ResNet, bottleneck", _resnet(2, BottleneckBlock, (4, 8, 16))),
    ]


def build(member: Member, input_shape: Sequence[int], seed: int) -> nnx.Module:
    """``member``'s model for (H, W, C) inputs, parameters from ``seed``; a plain member has its shortcuts off."""
    model = member.build(tuple(input_shape), nnx.Rngs(seed))
    if member.plain:
        set_shortcuts(model, False)
    return model


def counts(member_list: Sequence[Member], input_shape: Sequence[int]) -> dict[str, counting.CountTable]:
    """``{name: course.counting.count table}`` of every member on one example of ``input_shape`` (built
    abstractly: shapes only, no initializer runs)."""
    shape = tuple(input_shape)
    return {m.name: counting.count(nnx.eval_shape(lambda m=m: build(m, shape, 0)), shape, m.name)
            for m in member_list}


# ----------------------------------------------------------------------------------------------------------
# Training every member over seeds
def run_study(member_list: Sequence[Member], make_data: Callable[[int], data.Dataset], seed_list: Sequence[int], *,
              epochs: int, lr: float = 3e-3, batch_size: int = 64, workers: int = 2) -> dict[str, dict[str, Spread]]:
    """Train every member once per seed on ``make_data(seed)`` (same data, same epochs, same Adam learning rate
    for all: the same budget in steps), parameters and batch order from that seed. Returns ``{name: {"test":
    Spread, "train": Spread}}`` of the final test accuracy and of the last epoch's mean training accuracy.

    Members with the same architecture (a ResNet and its plain twin) reuse one compiled train step. The runs are
    independent, so ``workers`` threads run them side by side (JAX releases the GIL while it compiles and
    computes; small models leave a second core idle otherwise); each run's numbers are those of a sequential run
    (tests/test_what_each_idea_buys.py checks it)."""
    if not seed_list:
        raise ValueError("seed_list is empty; pass at least one seed, e.g. course.seeds.seeds(SEED, 3)")
    datasets = {seed: make_data(seed) for seed in seed_list}

    def one_run(m: Member, seed: int) -> tuple[float, float]:
        ds = datasets[seed]
        model = build(m, ds.input_shape, seed)
        hist = training.fit(model, (ds.x_train, ds.y_train), epochs=epochs, batch_size=batch_size, lr=lr,
                            seed=seed, verbose=False)
        return training.evaluate(model, ds.x_test, ds.y_test)["accuracy"], hist.train_accuracy[-1]

    jobs = [(m, seed) for seed in seed_list for m in member_list]
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        done = list(pool.map(lambda job: one_run(*job), jobs))  # in the order of jobs
    acc: dict[str, dict[str, list[float]]] = {m.name: {"test": [], "train": []} for m in member_list}
    for (m, _), (test, train) in zip(jobs, done):
        acc[m.name]["test"].append(test)
        acc[m.name]["train"].append(train)
    return {name: {k: Spread(tuple(v)) for k, v in d.items()} for name, d in acc.items()}


def step_seconds(member: Member, input_shape: Sequence[int], batch: int = 64, steps: int = 5,
                 seed: int = 0, lr: float = 3e-3) -> float:
    """Median seconds of one train step of ``member`` (Adam, cross-entropy), measured by the course's benchmark
    (:func:`course.bench.bench_model`: the step ``fit`` runs, on random data already on the device). With the
    study's ``lr`` the timing reuses the study's compiled step."""
    if steps < 1 or batch < 1:
        raise ValueError(f"steps and batch must be at least 1 (got steps={steps}, batch={batch})")
    shape = tuple(input_shape)
    timed = bench.bench_model(build(member, shape, seed), shape, 10, batch, steps, seed, name=member.name,
                              host_overhead=False, lr=lr)
    return timed.step_ms / 1e3


# ----------------------------------------------------------------------------------------------------------
# The Pareto front
def pareto_front(costs: Sequence[float], accuracies: Sequence[float]) -> list[bool]:
    """For each model, whether it is on the Pareto front: no other model costs at most as much *and* is at least
    as accurate, with one of the two strictly. (Lower cost and higher accuracy are better.)"""
    c, a = np.asarray(costs, float), np.asarray(accuracies, float)
    if c.ndim != 1 or c.shape != a.shape:
        raise ValueError(f"costs and accuracies must be two lists of the same length, got {c.shape} and {a.shape}")
    if len(c) == 0:
        raise ValueError("pareto_front needs at least one model")
    if not (np.isfinite(c).all() and np.isfinite(a).all()):
        raise ValueError("costs and accuracies must be finite numbers (a NaN accuracy means a run diverged)")
    dominated = ((c[None, :] <= c[:, None]) & (a[None, :] >= a[:, None])
                 & ((c[None, :] < c[:, None]) | (a[None, :] > a[:, None])))  # [i, j]: j dominates i
    return [not bool(row.any()) for row in dominated]


def beaten_by(name: str, cost: Mapping[str, float], results: Mapping[str, Mapping[str, Spread]],
              split: str = "test") -> list[str]:
    """The members that cost less than ``name`` and are more accurate beyond noise: the lower end of the 98%
    interval of ``mean(other) - mean(name)`` over seeds (:func:`course.claims.difference`, Welch t) is above 0.
    ``name`` is off the front *beyond noise* when this is not empty. Nothing is printed or asserted: a lesson that
    states one of these comparisons makes it a :func:`course.claims.beats` call. Each comparison alone passes by
    chance at most 1% of seed sets where the two do not differ; a list over k cheaper members, up to k%."""
    if name not in cost or name not in results:
        raise KeyError(f"{name!r} is not among the members measured: {', '.join(results)}")
    return [o for o in results if o != name and cost[o] < cost[name]
            and claims.difference(results[o][split], results[name][split]).low > 0]


# ----------------------------------------------------------------------------------------------------------
# Table and figures
def table(member_list: Sequence[Member], tables: Mapping[str, counting.CountTable],
          results: Mapping[str, Mapping[str, Spread]]) -> str:
    """One line per member: family, parameters, MACs (counted), test and training accuracy (mean ± sd)."""
    lines = [f"{'model':<18} {'family':<29} {'params':>7} {'MACs':>10}  {'test accuracy':>13}  "
             f"{'train accuracy':>14}"]
    for m in member_list:
        t, r = tables[m.name], results[m.name]
        lines.append(f"{m.name:<18} {m.family:<29} {t.params_total:>7,} {t.macs:>10,}  {format(r['test']):>13}  "
                     f"{format(r['train']):>14}")
    return "\n".join(lines)


def _families(member_list: Sequence[Member]) -> list[str]:
    return list(dict.fromkeys(m.family for m in member_list))


def plot_front(member_list: Sequence[Member], costs: Mapping[str, Mapping[str, float]],
               results: Mapping[str, Mapping[str, Spread]], split: str = "test",
               figsize=(12, 4.8)) -> Figure:
    """One panel per cost in ``costs`` ({"MACs per example": {name: value}, "parameters": {...}}): mean accuracy
    with sd error bars against the cost (log scale), one colour per family, a line joining the members of a
    family (small to large) and the Pareto front of the means as a dashed step line."""
    fams = _families(member_list)
    colours = dict(zip(fams, plt.get_cmap("tab10").colors))
    fig, axes = plt.subplots(1, len(costs), figsize=figsize, sharey=True)
    axes = np.atleast_1d(axes)
    for ax, (label, cost) in zip(axes, costs.items()):
        x = np.array([cost[m.name] for m in member_list], float)
        y = np.array([results[m.name][split].mean for m in member_list])
        e = np.array([results[m.name][split].sd for m in member_list])
        for fam in fams:
            idx = [i for i, m in enumerate(member_list) if m.family == fam]
            ax.errorbar(x[idx], y[idx], yerr=e[idx], fmt="o-", ms=6, capsize=3, color=colours[fam], label=fam)
        front = np.flatnonzero(pareto_front(x, y))
        front = front[np.argsort(x[front])]
        ax.step(x[front], y[front], where="post", ls="--", color="k", lw=1, label="Pareto front (means)")
        ax.scatter(x[front], y[front], s=160, facecolors="none", edgecolors="k", zorder=3)
        ax.set_xscale("log")
        ax.set_xlabel(f"{label} (log scale)", fontsize=FONT)
        ax.tick_params(labelsize=FONT)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{split} accuracy (mean ± sd over seeds)", fontsize=FONT)
    axes[0].legend(fontsize=9, loc="upper left")
    fig.tight_layout()
    return fig
