"""Notebook 08 (what each architectural idea buys): one small member of every family the course built, trained on
the same data with the same budget, counted, and compared as accuracy against MACs and parameters.

The families and the papers they come from:

* :class:`~course.models.simple.MLP` and :class:`~course.models.simple.SmallCNN`: locality, weight sharing and
  pooling (LeCun et al., "Gradient-based learning applied to document recognition", 1998; notebook 01).
* :class:`InceptionNet`: a 3x3 stem and two Inception modules with 1x1 reductions (Szegedy et al., "Going deeper
  with convolutions", CVPR 2015, Fig. 2b) or without them (Fig. 2a, :class:`~course.models.inception.NaiveInception`),
  on the same filter counts (notebook 02), and :func:`members`' ``Inception-S-wide``: the reduced module widened
  until it costs what the naive one costs: the comparison GoogLeNet's claim is about (abstract: "we increased the
  depth and width of the network while keeping the computational budget constant").
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
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

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


#: The matched-cost pair: a reduced Inception network widened to the naive one's cost, and that naive network.
MATCHED = ("Inception-S-wide", "Inception-naive-S")


def members() -> list[Member]:
    """The study's models, two sizes per family (``input_shape`` is chosen when they are built), and one more
    Inception member for the matched-cost pair :data:`MATCHED`: ``Inception-S-wide`` has Inception-S's modules
    with every filter count times 1.7 (rounded), so that at 12x12 it costs what Inception-naive-S costs (within
    1 % of its MACs and 7 % of its parameters, both below): at equal cost, the reductions buy width."""
    row_s = ((4, 4, 8, 2, 4, 4), (8, 8, 16, 2, 4, 4))
    row_l = ((8, 8, 16, 4, 8, 8), (16, 16, 32, 4, 8, 8))
    # row_s's filters times 1.7, rounded: the reduced modules at Inception-naive-S's MACs (and parameters), same stem
    row_s_wide = ((7, 7, 14, 3, 7, 7), (14, 14, 27, 3, 7, 7))
    return [
        Member("MLP-64", "MLP", _mlp((64,))),
        Member("MLP-256", "MLP", _mlp((256,))),
        Member("CNN-8", "CNN", _cnn((8, 16, 32))),
        Member("CNN-16", "CNN", _cnn((16, 32, 64))),
        Member("Inception-naive-S", "Inception, no 1x1 reductions", _inception(8, row_s, False)),
        Member("Inception-naive-L", "Inception, no 1x1 reductions", _inception(16, row_l, False)),
        Member("Inception-S", "Inception", _inception(8, row_s, True)),
        Member("Inception-S-wide", "Inception", _inception(8, row_s_wide, True)),
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
def fit_measuring_last_epoch(model: nnx.Module, train: tuple[np.ndarray, np.ndarray], *, epochs: int,
                             batch_size: int, lr: float, seed: int, train_eval: int | None) -> training.History:
    """``training.fit(model, train, epochs=epochs, ..., train_eval=train_eval)`` with the eval-mode training
    accuracy measured after the last epoch only (the study reads nothing else, and measuring every epoch costs
    seconds of the notebook's budget): the first ``epochs - 1`` epochs, then the last one with ``train_eval``, on
    one optimizer. The weights, the batches and the subset measured are those of the single call (``fit`` draws
    the subset from ``seed``; tests/test_what_each_idea_buys.py checks that the numbers are the same). Returns the
    last call's :class:`~course.training.History` (one epoch)."""
    opt = training.make_optimizer(model, lr)
    if epochs > 1:
        training.fit(model, train, epochs=epochs - 1, batch_size=batch_size, optimizer=opt, seed=seed,
                     verbose=False)
    return training.fit(model, train, epochs=epochs, first_epoch=epochs, batch_size=batch_size, optimizer=opt,
                        seed=seed, verbose=False, train_eval=train_eval)


def run_study(member_list: Sequence[Member], make_data: Callable[[int], data.Dataset], seed_list: Sequence[int], *,
              epochs: int, lr: float = 3e-3, batch_size: int = 64, workers: int = 2,
              train_eval: int | None = 512) -> dict[str, dict[str, Spread]]:
    """Train every member once per seed on ``make_data(seed)`` (same data, same epochs, same Adam learning rate
    for all: the same budget in steps), parameters and batch order from that seed. Returns ``{name: {"test":
    Spread, "train": Spread, "running": Spread}}``: the final test accuracy; the final training accuracy measured
    as the test accuracy is (eval mode, after the last epoch, on a fixed random subset of ``train_eval`` training
    examples: :func:`course.training.fit`'s ``train_eval``; absent with ``train_eval=None``); and the running
    training accuracy (the mean over the last epoch's batches, in train mode, while the weights move). Compare
    training with test accuracy only through ``"train"``.

    Members with the same architecture (a ResNet and its plain twin) reuse one compiled train step. The runs are
    independent, so ``workers`` threads run them side by side (JAX releases the GIL while it compiles and
    computes; small models leave a second core idle otherwise); each run's numbers are those of a sequential run
    (tests/test_what_each_idea_buys.py checks it)."""
    if not seed_list:
        raise ValueError("seed_list is empty; pass at least one seed, e.g. course.seeds.seeds(SEED, 3)")
    datasets = {seed: make_data(seed) for seed in seed_list}

    def one_run(m: Member, seed: int) -> dict[str, float]:
        ds = datasets[seed]
        model = build(m, ds.input_shape, seed)
        hist = fit_measuring_last_epoch(model, (ds.x_train, ds.y_train), epochs=epochs, batch_size=batch_size,
                                        lr=lr, seed=seed, train_eval=train_eval)
        out = {"test": training.evaluate(model, ds.x_test, ds.y_test)["accuracy"],
               "running": hist.train_accuracy[-1]}
        if train_eval is not None:
            out["train"] = hist.train_eval_accuracy[-1]
        return out

    jobs = [(m, seed) for seed in seed_list for m in member_list]
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        done = list(pool.map(lambda job: one_run(*job), jobs))  # in the order of jobs
    acc: dict[str, dict[str, list[float]]] = {m.name: {} for m in member_list}
    for (m, _), run in zip(jobs, done):
        for k, v in run.items():
            acc[m.name].setdefault(k, []).append(v)
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
    """One line per member: family, parameters, MACs (counted), then mean ± sd over seeds of the test accuracy,
    the training accuracy measured as the test accuracy is (eval mode, after the last epoch; ``"train"``) and the
    running training accuracy (train mode, over the last epoch's batches; ``"running"``). Columns the results do
    not hold are left out."""
    cols = [(k, head) for k, head in (("test", "test"), ("train", "training"), ("running", "running training"))
            if all(k in results[m.name] for m in member_list)]
    modes = {"test": "(eval mode)", "train": "(eval mode)", "running": "(train mode)"}
    lines = [f"{'':<18} {'':<29} {'':>7} {'':>10}" + "".join(f"  {head:>16}" for _, head in cols),
             f"{'model':<18} {'family':<29} {'params':>7} {'MACs':>10}" + "".join(f"  {modes[k]:>16}" for k, _ in cols)]
    for m in member_list:
        t, r = tables[m.name], results[m.name]
        lines.append(f"{m.name:<18} {m.family:<29} {t.params_total:>7,} {t.macs:>10,}"
                     + "".join(f"  {format(r[k]):>16}" for k, _ in cols))
    return "\n".join(lines)


def _families(member_list: Sequence[Member]) -> list[str]:
    return list(dict.fromkeys(m.family for m in member_list))


def front_members(member_list: Sequence[Member], cost: Mapping[str, float],
                  results: Mapping[str, Mapping[str, Spread]], split: str = "test") -> list[str]:
    """The members on the Pareto front of the *means* for one cost (cheapest first): no other member costs at most
    as much and is at least as accurate on average. A member on this front need not be there beyond noise
    (:func:`beaten_by` and :mod:`course.claims` say what 3 seeds establish)."""
    names = [m.name for m in member_list]
    on = pareto_front([cost[n] for n in names], [results[n][split].mean for n in names])
    return sorted((n for n, f in zip(names, on) if f), key=lambda n: cost[n])


def place_labels(ax, x: Sequence[float], y: Sequence[float], labels: Sequence[str], fontsize: float = 9,
                 colours: Sequence | None = None, yerr: Sequence[float] | None = None) -> list:
    """Write ``labels[i]`` beside the point (x[i], y[i]) of ``ax`` so that no two labels overlap each other, a
    point or its error bar (``yerr``): each label takes the first free spot among offsets of growing distance
    around its point (greedy, in the order given), with a thin leader line when it lands away from the point.
    Returns the annotations."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    pts = ax.transData.transform(np.column_stack([x, y]))  # display pixels
    px = fig.dpi / 72.0  # pixels per point
    r = 6 * px  # a marker's half size, in pixels
    taken = [(p[0] - r, p[1] - r, p[0] + r, p[1] + r) for p in pts]
    if yerr is not None:  # each error bar as a thin box, caps included
        lo = ax.transData.transform(np.column_stack([x, np.asarray(y) - np.asarray(yerr)]))
        hi = ax.transData.transform(np.column_stack([x, np.asarray(y) + np.asarray(yerr)]))
        taken += [(a[0] - 4 * px, a[1], b[0] + 4 * px, b[1]) for a, b in zip(lo, hi)]
    dirs = [(1, 0.3), (1, -0.9), (-1, 0.3), (-1, -0.9), (0, 1.3), (0, -1.8), (1, 1.2), (-1, 1.2), (1, -1.8),
            (-1, -1.8)]
    out = []
    for i, (p, text) in enumerate(zip(pts, labels)):
        colour = colours[i] if colours is not None else "k"
        placed = None
        for dist in (7, 14, 24, 36, 50):
            for dx, dy in dirs:
                off = (dx * dist, dy * dist * 0.8)
                ha = "left" if dx > 0 else ("right" if dx < 0 else "center")
                ann = ax.annotate(text, (x[i], y[i]), xytext=off, textcoords="offset points", ha=ha, va="center",
                                  fontsize=fontsize, color=colour)
                bb = ann.get_window_extent(renderer)
                box = (bb.x0 - 1, bb.y0 - 1, bb.x1 + 1, bb.y1 + 1)
                inside = ax.get_window_extent(renderer)
                fits = inside.x0 <= box[0] and box[2] <= inside.x1 and inside.y0 <= box[1] and box[3] <= inside.y1
                if fits and not any(box[0] < t[2] and t[0] < box[2] and box[1] < t[3] and t[1] < box[3]
                                    for t in taken):
                    placed = (ann, box, dist)
                    break
                ann.remove()
            if placed:
                break
        if placed is None:  # nowhere free: beside the point, overlapping
            ann = ax.annotate(text, (x[i], y[i]), xytext=(7, 3), textcoords="offset points", fontsize=fontsize,
                              color=colour)
            placed = (ann, tuple(ann.get_window_extent(renderer).extents), 7)
        ann, box, dist = placed
        if dist > 7:  # away from its point: a leader line says whose label it is
            ann.arrow_patch = None
            ann.remove()
            ann = ax.annotate(text, (x[i], y[i]), xytext=ann.xyann, textcoords="offset points", ha=ann.get_ha(),
                              va="center", fontsize=fontsize, color=colour,
                              arrowprops=dict(arrowstyle="-", color=colour, lw=0.8, shrinkA=0, shrinkB=4))
        taken.append(box)
        out.append(ann)
    return out


def _si(v: float, _pos=None) -> str:
    """A tick label in short form: 2000 -> "2k", 500000 -> "500k", 1e6 -> "1M"."""
    for unit, div in (("M", 1e6), ("k", 1e3)):
        if v >= div:
            return f"{v / div:g}{unit}"
    return f"{v:g}"


def short_name(name: str) -> str:
    """A member's name as the figures label its point: "Inception-naive-S" -> "naive-S", "Inception-S" ->
    "Inc-S", "ResNet-bneck-11" -> "bneck-11" (the colour says the family)."""
    return name.replace("Inception-naive-", "naive-").replace("Inception-", "Inc-").replace("ResNet-bneck-", "bneck-")


def plot_front(member_list: Sequence[Member], costs: Mapping[str, Mapping[str, float]],
               results: Mapping[str, Mapping[str, Spread]], split: str = "test",
               figsize=(12, 5.4)) -> Figure:
    """One panel per cost in ``costs`` ({"MACs per example": {name: value}, "parameters": {...}}): mean accuracy
    with sd error bars against the cost (log scale), one colour per family, every point labelled with its
    member's :func:`short_name` (twins of equal cost, such as plain-8 and ResNet-8, sit at the same x: the
    labels tell them apart), and the Pareto front of the means as a dashed step line with its points circled."""
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
            ax.errorbar(x[idx], y[idx], yerr=e[idx], fmt="o", ms=6, capsize=3, color=colours[fam], label=fam)
        front = np.flatnonzero(pareto_front(x, y))
        front = front[np.argsort(x[front])]
        ax.step(x[front], y[front], where="post", ls="--", color="k", lw=1, label="Pareto front (means)")
        ax.scatter(x[front], y[front], s=160, facecolors="none", edgecolors="k", zorder=3)
        ax.set_xscale("log")
        ax.set_xlim(x.min() / 1.8, x.max() * 1.8)
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
        ax.xaxis.set_major_formatter(FuncFormatter(_si))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"{label} (log scale)", fontsize=FONT)
        ax.tick_params(labelsize=FONT)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{split} accuracy (mean ± sd over seeds)", fontsize=FONT)
    lo = min(results[m.name][split].mean - results[m.name][split].sd for m in member_list)
    hi = max(results[m.name][split].mean + results[m.name][split].sd for m in member_list)
    axes[0].set_ylim(max(0.0, lo - 0.08), min(1.0, hi + 0.08))
    handles, labs = axes[0].get_legend_handles_labels()
    fig.legend(handles, labs, loc="lower center", ncol=4, fontsize=FONT, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    for ax, cost in zip(axes, costs.values()):
        place_labels(ax, [cost[m.name] for m in member_list], [results[m.name][split].mean for m in member_list],
                     [short_name(m.name) for m in member_list], fontsize=9,
                     colours=[colours[m.family] for m in member_list],
                     yerr=[results[m.name][split].sd for m in member_list])
    return fig
