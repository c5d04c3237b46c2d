"""Notebook 02 (1x1 convolutions and bottleneck layers): what GoogLeNet costs, layer by layer, beside the paper's
own Table 1. (Formerly ``course.inception_costs``; notebook 03's gradient helpers moved to
``course.lessons.auxiliary_classifiers``.)

* :data:`PAPER_TABLE1`: the paper's Table 1 (Szegedy et al., "Going deeper with convolutions", 2014,
  arXiv:1409.4842), typed in as data: output size, depth, and the "params" and "ops" columns.
* :func:`compare_with_table1`: our counts (``course.counting``) grouped into Table 1's rows, beside the paper's.
* :func:`naive_vs_reduced` and :func:`channel_growth`: the naive Inception module (Fig. 2a) against the one with
  1x1 reductions (Fig. 2b), per branch and stacked layer after layer.
* :func:`xla_by_kernel`: XLA's FLOP count against 2 x MACs, layer kind by layer kind (``counting.reconcile``).
* :class:`MiniInception` and :func:`train_mini`: what the reductions cost in *accuracy*: a two-module Inception
  network on 8x8 digits, naive or with its #3x3 reduce and #5x5 reduce at a chosen width, trained and tested;
  :func:`plot_accuracy_vs_macs` puts the seeds' mean and spread beside each model's MACs.

Plots take data and return a Figure; none calls ``plt.show()``.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import jax
import matplotlib.pyplot as plt
import numpy as np
from flax import nnx
from matplotlib.figure import Figure

from course import counting, data, training
from course.models.inception import (PAPER_LAYOUT, ConvSpec, Inception, InceptionNet, InceptionRow,
                                     LayoutItem, NaiveInception, grid_sizes)
from course.seeds import Spread


@dataclasses.dataclass(frozen=True)
class Table1Row:
    """One row of the paper's Table 1. ``params_k`` and ``ops_m`` are the printed "params" (K) and "ops" (M)
    cells; None where the paper leaves them blank (pooling, dropout, softmax)."""

    name: str
    type: str
    patch: str
    output: tuple[int, int, int]
    depth: int
    params_k: float | None = None
    ops_m: float | None = None


# Szegedy et al. 2014, Table 1 "GoogLeNet incarnation of the Inception architecture", as printed (arXiv:1409.4842).
# The filter-count columns (#1x1 ... pool proj) live in course.models.inception.PAPER_LAYOUT.
PAPER_TABLE1: tuple[Table1Row, ...] = (
    Table1Row("conv1", "convolution", "7x7/2", (112, 112, 64), 1, 2.7, 34),
    Table1Row("pool1", "max pool", "3x3/2", (56, 56, 64), 0),
    Table1Row("conv2", "convolution", "3x3/1", (56, 56, 192), 2, 112, 360),
    Table1Row("pool2", "max pool", "3x3/2", (28, 28, 192), 0),
    Table1Row("3a", "inception", "", (28, 28, 256), 2, 159, 128),
    Table1Row("3b", "inception", "", (28, 28, 480), 2, 380, 304),
    Table1Row("pool3", "max pool", "3x3/2", (14, 14, 480), 0),
    Table1Row("4a", "inception", "", (14, 14, 512), 2, 364, 73),
    Table1Row("4b", "inception", "", (14, 14, 512), 2, 437, 88),
    Table1Row("4c", "inception", "", (14, 14, 512), 2, 463, 100),
    Table1Row("4d", "inception", "", (14, 14, 528), 2, 580, 119),
    Table1Row("4e", "inception", "", (14, 14, 832), 2, 840, 170),
    Table1Row("pool4", "max pool", "3x3/2", (7, 7, 832), 0),
    Table1Row("5a", "inception", "", (7, 7, 832), 2, 1072, 54),
    Table1Row("5b", "inception", "", (7, 7, 1024), 2, 1388, 71),
    Table1Row("avgpool", "avg pool", "7x7/1", (1, 1, 1024), 0),
    Table1Row("dropout", "dropout (40%)", "", (1, 1, 1024), 0),
    Table1Row("fc", "linear", "", (1, 1, 1000), 1, 1000, 1),
    Table1Row("softmax", "softmax", "", (1, 1, 1000), 0),
)
PAPER_TOTAL_MACS = 1.5e9  # Sec. 1 (Introduction): "for most of the experiments, the models were designed to keep a
# computational budget of 1.5 billion multiply-adds at inference time": a design budget, not a sum of Table 1
TORCHVISION_PARAMS = 6_624_904  # torchvision.models.googlenet, documented (aux heads off)
TORCHVISION_GMACS = 1.50  # torchvision's documented "GFLOPS" for googlenet, which are GMACs


def weights(r: counting.LayerCount) -> int:
    """Multiplicative weights of a conv/linear row (no bias, no BatchNorm), what Table 1's params column counts."""
    if r.kernel is not None:
        return int(np.prod(r.kernel)) * (r.in_shape[-1] // r.groups) * r.out_shape[-1]
    if r.kind == "Linear":
        return r.in_shape[-1] * r.out_shape[-1]
    return 0


def table1_name(path: str) -> str | None:
    """The Table 1 row a layer belongs to: conv2_reduce and conv2 form Table 1's depth-2 "conv2" row."""
    top = path.split("/")[0]
    if top.startswith("inception"):
        return top[len("inception"):]
    return {"conv1": "conv1", "conv2_reduce": "conv2", "conv2": "conv2", "fc": "fc"}.get(top)


def compare_with_table1(table: counting.CountTable) -> list[dict]:
    """One dict per Table 1 row that has params/ops cells: our weights, parameters (with biases), MACs and
    output shape, the paper's cells, and what the paper's ops cell implies for its own params cell.

    Keys: row, weights, params, macs, output, paper_output, paper_params_k, paper_ops_m, weights_k (our weights
    / 1024, the unit Table 1 uses, see notebook 02), params_ratio and ops_ratio (ours / paper), and
    implied_k = paper ops / (H_out * W_out) / 1024: the weights a row with the paper's ops would have.
    """
    ours: dict[str, dict] = {}
    for r in table.rows:
        name = table1_name(r.path)
        if name is None:
            continue
        d = ours.setdefault(name, {"weights": 0, "params": 0, "macs": 0})
        d["weights"] += weights(r)
        d["params"] += r.params
        d["macs"] += r.macs
        d["output"] = r.out_shape  # of the last layer; replaced for Inception rows below
    rows = []
    for t in PAPER_TABLE1:
        if t.params_k is None or t.name not in ours:
            continue
        d = ours[t.name]
        h, w, _ = t.output
        rows.append({"row": t.name, **d, "paper_output": t.output, "paper_params_k": t.params_k,
                     "paper_ops_m": t.ops_m, "weights_k": d["weights"] / 1024,
                     "params_ratio": d["weights"] / 1024 / t.params_k, "ops_ratio": d["macs"] / 1e6 / t.ops_m,
                     "implied_k": t.ops_m * 1e6 / (h * w) / 1024})
    return rows


def format_table(rows: Sequence[Mapping], columns: Mapping[str, str]) -> str:
    """Rows of dicts as aligned text: ``columns`` maps a key to a format spec ("", ",", ".3f", ...)."""
    cells = [[format(r[k], f) if not isinstance(r[k], str) else r[k] for k, f in columns.items()] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(columns)]
    line = lambda cs: "  ".join(c.rjust(w) for c, w in zip(cs, widths))  # noqa: E731
    return "\n".join([line(list(columns)), line(["-" * w for w in widths])] + [line(c) for c in cells])


# ----------------------------------------------------------------------------------------------------------
_BRANCH = {"conv1x1": "1x1", "reduce3x3": "3x3", "conv3x3": "3x3", "reduce5x5": "5x5", "conv5x5": "5x5",
           "pool_proj": "pool"}


def branch_costs(module: Inception | NaiveInception, hw: int) -> dict[str, dict[str, int]]:
    """Per branch ("1x1", "3x3", "5x5", "pool") of an (abstract) Inception module on an hw x hw input:
    parameters, MACs (from ``course.counting``) and the channels the branch contributes to the output."""
    shape = (hw, hw, module.in_ch)
    out = {b: {"params": 0, "macs": 0, "channels": 0} for b in ("1x1", "3x3", "5x5", "pool")}
    for r in counting.count(module, shape).rows:
        b = _BRANCH[r.path.split("/")[0]]
        out[b]["params"] += r.params
        out[b]["macs"] += r.macs
    ys = nnx.eval_shape(lambda m, x: m.branches(x), module, jax.ShapeDtypeStruct((1, *shape), np.float32))
    for b, y in ys.items():
        out[b]["channels"] = y.shape[-1]
    return out


def naive_vs_reduced(row: InceptionRow, in_ch: int, hw: int) -> dict[str, dict[str, dict[str, int]]]:
    """Branch costs of the naive module (Fig. 2a: the row's #1x1, #3x3, #5x5 straight on the input, the pooled
    input passed through) and of the row's module with 1x1 reductions (Fig. 2b), on an hw x hw x in_ch input."""
    naive = nnx.eval_shape(lambda: NaiveInception(in_ch, row.n1x1, row.n3x3, row.n5x5, rngs=nnx.Rngs(0)))
    reduced = nnx.eval_shape(lambda: Inception.from_row(in_ch, row, rngs=nnx.Rngs(0)))
    return {"naive": branch_costs(naive, hw), "with 1x1 reductions": branch_costs(reduced, hw)}


def channel_growth(layout: Sequence[LayoutItem] = PAPER_LAYOUT, input_hw: int = 224,
                   input_ch: int = 3) -> list[dict]:
    """Stack the layout's Inception rows twice, as naive modules and as modules with 1x1 reductions (same stem,
    same pools), and return per row: input/output channels and MACs of both stacks.

    A naive module passes its pooled input through, so its output has in_ch + #1x1 + #3x3 + #5x5 channels and
    every later module reads a wider input (Sec. 4: "an inevitable increase in the number of outputs from stage to
    stage").
    """
    ch = input_ch
    naive_ch = reduced_ch = None
    rows = []
    for item, hw, _ in grid_sizes(layout, input_hw, input_hw):
        if isinstance(item, ConvSpec):
            ch = item.out
        elif isinstance(item, InceptionRow):
            naive_ch = ch if naive_ch is None else naive_ch
            reduced_ch = ch if reduced_ch is None else reduced_ch
            naive = nnx.eval_shape(lambda: NaiveInception(naive_ch, item.n1x1, item.n3x3, item.n5x5,
                                                          rngs=nnx.Rngs(0)))
            reduced = nnx.eval_shape(lambda: Inception.from_row(reduced_ch, item, rngs=nnx.Rngs(0)))
            rows.append({"row": item.name, "hw": hw,
                         "naive_in": naive_ch, "naive_out": naive.out_ch,
                         "naive_macs": counting.count(naive, (hw, hw, naive_ch)).macs,
                         "reduced_in": reduced_ch, "reduced_out": reduced.out_ch,
                         "reduced_macs": counting.count(reduced, (hw, hw, reduced_ch)).macs})
            naive_ch, reduced_ch = rows[-1]["naive_out"], item.out_ch
    return rows


_XLA_KEYS = ("macs", "flops", "padding_taps_flops", "bias_adds", "xla_formula", "xla_measured")


def xla_by_kernel(model: nnx.Module, table: counting.CountTable) -> list[dict]:
    """:func:`course.counting.reconcile` summed by layer kind ("Conv1x1", "Conv3x3", ..., "Linear"), one dict per
    kind in order of first appearance: ``layers`` and the sums of MACs, FLOPs (2 x MACs), the FLOPs of kernel taps
    that fall in the zero padding (XLA does not count them), bias adds (XLA does), XLA's count by formula and
    XLA's own count, measured layer by layer."""
    kind = {r.path: r.kind for r in table.rows}
    out: dict[str, dict] = {}
    for r in counting.reconcile(model, table):
        d = out.setdefault(kind[r["path"]], {"kind": kind[r["path"]], "layers": 0, **{k: 0 for k in _XLA_KEYS}})
        d["layers"] += 1
        for k in _XLA_KEYS:
            d[k] += r[k]
    return list(out.values())


# ----------------------------------------------------------------------------------------------------------
# What a reduction costs in accuracy
MINI_FILTERS = (8, 16, 8, 8)  # #1x1, #3x3, #5x5, pool proj of both modules: Inception 3a's 64, 128, 32, 32 / 8


class MiniInception(InceptionNet):
    """Two Inception modules on 8x8 images, naive (Fig. 2a) or with 1x1 reductions (Fig. 2b) of width ``reduce``.

    stem: 3x3 conv to ``width`` channels; module A at 8x8; 2x2 max pool; module B at 4x4; global average pool;
    linear classifier (:class:`course.models.inception.InceptionNet`). Both modules have #1x1, #3x3, #5x5 (and
    pool proj) = :data:`MINI_FILTERS`. With ``reduce=None`` they are :class:`NaiveInception` (no reductions, the
    pooled input passed through, so B reads a wider input); with ``reduce=r`` they are :class:`Inception` whose
    #3x3 reduce and #5x5 reduce are both r (Szegedy et al. 2014, arXiv:1409.4842, Sec. 4: reductions "before the
    expensive 3x3 and 5x5 convolutions").
    """

    def __init__(self, reduce: int | None, width: int = 32, num_classes: int = 10, in_ch: int = 1, *,
                 rngs: nnx.Rngs):
        if reduce is not None and (isinstance(reduce, bool) or not isinstance(reduce, (int, np.integer))
                                   or reduce < 1):
            raise ValueError(f"reduce must be None (naive modules) or a positive int (the width of the 1x1 "
                             f"reductions), not {reduce!r}")
        n1x1, n3x3, n5x5, pool_proj = MINI_FILTERS
        r = int(reduce or 0)  # unused by naive modules
        super().__init__(in_ch, num_classes, width, ((n1x1, r, n3x3, r, n5x5, pool_proj),) * 2,
                         reduce=reduce is not None, rngs=rngs)
        self.reduce = reduce

    @property
    def inception_a(self) -> Inception | NaiveInception:  # the module on the 8x8 grid
        return self.blocks[0]

    @property
    def inception_b(self) -> Inception | NaiveInception:  # the module on the 4x4 grid, after the pool
        return self.blocks[1]


def mini_label(reduce: int | None) -> str:
    return "naive (Fig. 2a)" if reduce is None else f"reduce to {reduce}"


def train_mini(reduce: int | None, seed: int, epochs: int = 8, lr: float = 3e-3) -> float:
    """Test accuracy of a :class:`MiniInception` trained with Adam on the digits (``course.data.digits``). The
    seed picks the train/test split, the initial weights and the batch order. Models of one ``reduce`` share one
    compiled train step, whatever the seed."""
    ds = data.digits(seed=seed)
    model = MiniInception(reduce, rngs=nnx.Rngs(seed))
    training.fit(model, (ds.x_train, ds.y_train), epochs=epochs, lr=lr, seed=seed, verbose=False)
    return training.evaluate(model, ds.x_test, ds.y_test)["accuracy"]


# ----------------------------------------------------------------------------------------------------------
# Plots
def plot_branch_costs(costs: Mapping[str, Mapping[str, Mapping[str, int]]], title: str = "",
                      figsize: tuple[float, float] = (10, 3.2)) -> Figure:
    """Three panels (parameters, MACs, output channels), grouped bars per branch, one bar per variant."""
    fig, axes = plt.subplots(1, 3, figsize=figsize)
    variants = list(costs)
    branches = list(next(iter(costs.values())))
    width = 0.8 / len(variants)
    for ax, key, label in zip(axes, ("params", "macs", "channels"), ("parameters", "MACs", "output channels")):
        for i, v in enumerate(variants):
            xs = np.arange(len(branches)) + (i - (len(variants) - 1) / 2) * width
            ax.bar(xs, [costs[v][b][key] for b in branches], width, label=v)
        ax.set_xticks(range(len(branches)))
        ax.set_xticklabels(branches)
        ax.set_title(label)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_channel_growth(rows: Sequence[Mapping], figsize: tuple[float, float] = (10, 3.2)) -> Figure:
    """Output channels and MACs per Inception row, naive stack vs reduced stack (MACs on a log axis)."""
    fig, (a, b) = plt.subplots(1, 2, figsize=figsize)
    names = [r["row"] for r in rows]
    a.plot(names, [r["naive_out"] for r in rows], marker="o", label="naive (Fig. 2a)")
    a.plot(names, [r["reduced_out"] for r in rows], marker="o", label="with 1x1 reductions (Fig. 2b)")
    a.set_title("output channels")
    b.plot(names, [r["naive_macs"] for r in rows], marker="o", label="naive (Fig. 2a)")
    b.plot(names, [r["reduced_macs"] for r in rows], marker="o", label="with 1x1 reductions (Fig. 2b)")
    b.set_yscale("log")
    b.set_ylabel("MACs (log scale)")
    b.set_title("MACs per module")
    for ax in (a, b):
        ax.set_xlabel("Inception row")
        ax.grid(alpha=0.3)
    a.legend(fontsize=9)
    fig.tight_layout()
    return fig


def plot_table1_ratios(rows: Sequence[Mapping], clip: float = 10.0,
                       figsize: tuple[float, float] = (10, 3.2)) -> Figure:
    """How far Table 1's params and ops cells are from our counts, in percent (ours / paper - 1), row by row;
    bars beyond +-``clip`` % are cut and labelled with their ratio."""
    fig, ax = plt.subplots(figsize=figsize)
    names = [r["row"] for r in rows]
    x = np.arange(len(names))
    for dx, key, label in ((-0.2, "params_ratio", "params: our weights / 1024 vs the paper's K"),
                           (0.2, "ops_ratio", "ops: our MACs / 10^6 vs the paper's M")):
        pct = np.array([(r[key] - 1) * 100 for r in rows])
        shown = np.clip(pct, -clip, clip)
        ax.bar(x + dx, shown, 0.4, label=label)
        for xi, p, s in zip(x + dx, pct, shown):
            if p != s:
                ax.text(xi, s, f"x{1 + p / 100:.2f} ", ha="right" if dx < 0 else "left",
                        va="bottom" if p > 0 else "top", fontsize=9)
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels(names)
    ax.set_ylim(-clip * 1.25, clip * 1.25)
    ax.set_ylabel("ours / paper - 1 (%)")
    ax.set_title("our counts against Table 1 (0 = agreement)")
    ax.legend(fontsize=9, loc="lower right")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def plot_accuracy_vs_macs(results: Mapping[str, tuple[int, Spread]], title: str = "",
                          figsize: tuple[float, float] = (7, 3.6)) -> Figure:
    """Test accuracy (mean over seeds, error bar = sample sd) against MACs per image (log axis), one labelled
    point per model. ``results`` maps a label to (MACs, :class:`~course.seeds.Spread` of accuracies)."""
    fig, ax = plt.subplots(figsize=figsize)
    for label, (macs, acc) in results.items():
        ax.errorbar([macs], [acc.mean], yerr=[acc.sd], fmt="o", capsize=4, ms=7)
        ax.annotate(f"{label}\n{acc.mean:.3f} ± {acc.sd:.3f}", (macs, acc.mean), textcoords="offset points",
                    xytext=(8, -4), fontsize=9, va="top")
    ax.set_xscale("log")
    lo, hi = min(m for m, _ in results.values()), max(m for m, _ in results.values())
    ax.set_xlim(lo / 1.6, hi * 3)
    ax.set_xlabel("MACs per image (log scale)")
    ax.set_ylabel("test accuracy")
    ax.set_title(title or "accuracy against cost, mean ± sd over seeds")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
