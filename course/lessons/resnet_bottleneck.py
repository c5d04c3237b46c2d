"""Helpers of notebook 04 only: the degradation experiment, gradients read off the first SGD step, what a block
costs in weights, MACs and activation memory, and the notebook's figures.

* :func:`degradation_runs`: He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016,
  arXiv:1512.03385), Sec. 4.1 and 4.2, Fig. 1 and Fig. 6: plain networks of 20 and 56 layers and the ResNets of
  the same depths, trained on the same data with the same budget. Degradation means the *deeper plain* network
  trains worse than the shallower one; the residual version of the deeper network does not.
* :func:`first_step_grad_norms`: the gradient of every conv layer at initialisation, read off the first step of
  SGD with momentum (the momentum buffer starts at zero, so the first update is exactly ``-lr * gradient``). It
  reuses the compiled training step (no extra compile) and runs on a clone, so the network that is then trained
  keeps its initial weights *and* BatchNorm statistics. With BatchNorm, a plain network's gradients grow towards
  the input, and faster the deeper it is (Yang, Pennington, Rao, Sohl-Dickstein and Schoenholz, "A mean field
  theory of batch normalization", ICLR 2019: gradient explosion at initialisation).
* :func:`activation_memory`: the values each layer writes per example, as CS231n's "ConvNet architectures"
  notes account VGGNet's memory: training keeps them for the backward pass, so they scale with the batch.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from flax import nnx
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyBboxPatch
from matplotlib.ticker import MaxNLocator

from course import paths, training
from course import seeds as seeds_mod
from course.counting import CountTable, LayerCount
from course.data import Dataset
from course.models import resnet
from course.models.layers import PointwiseConv

#: Colour per depth and line style per kind in the figures (the paper's Fig. 6 draws each depth in its colour).
DEPTH_COLOURS = {20: "#1f77b4", 32: "#2ca02c", 44: "#9467bd", 56: "#d62728", 110: "#8c564b"}


def twins(depth: int, seed: int, input_shape: Sequence[int], widths: Sequence[int],
          num_classes: int = 10) -> tuple[resnet.ResNet, resnet.ResNet]:
    """(plain, ResNet) of ``depth`` layers with identical initial weights: one gated CIFAR network (Sec. 4.2,
    option A shortcuts) built from ``seed`` and cloned, its shortcuts switched off in the first copy. Both share
    one graph structure, so they share one compiled training step."""
    base = resnet.cifar_resnet(depth, num_classes, tuple(input_shape), widths=tuple(widths), gated=True,
                               rngs=nnx.Rngs(seed))
    return resnet.set_shortcuts(nnx.clone(base), False), resnet.set_shortcuts(base, True)


def conv_kernels(model: nnx.Module) -> dict[str, np.ndarray]:
    """Every convolution kernel of ``model`` (3x3 and 1x1, shortcut projections included), keyed by path, input
    side first."""
    out = {}
    for path, m in nnx.iter_modules(model):
        if isinstance(m, (nnx.Conv, PointwiseConv)):
            out[paths.name(path)] = np.asarray(m.kernel[...])
    return out


def first_step_grad_norms(model: nnx.Module, x: np.ndarray, y: np.ndarray,
                          tx, lr: float, seed: int = 0) -> dict[str, float]:
    """L2 norm of the loss gradient with respect to each conv kernel of ``model``, at its current weights, on the
    batch (x, y) in training mode (BatchNorm on batch statistics, as in training).

    Read off one step of ``tx`` on a clone (``model`` itself is not touched: neither its weights nor its
    BatchNorm running averages). ``tx`` must be ``optax.sgd(lr, momentum=...)`` without weight decay: its
    momentum buffer starts at zero, so the first update is exactly ``-lr * gradient`` (up to float32 rounding
    of the subtraction). Passing the same ``tx`` object as the training runs reuses their compiled step.
    """
    if len(x) != len(y) or len(x) < 1:
        raise ValueError(f"need a batch of examples with one label each, got {len(x)} images, {len(y)} labels")
    clone = nnx.clone(model)
    before = conv_kernels(clone)
    training.fit(clone, (np.asarray(x), np.asarray(y)), epochs=1, batch_size=len(x), tx=tx, seed=seed,
                 verbose=False)
    after = conv_kernels(clone)
    return {k: float(np.linalg.norm((before[k].astype(np.float64) - after[k]) / lr)) for k in before}


def main_path(norms: Mapping[str, float]) -> np.ndarray:
    """The norms of the layers on the main path, input side first: conv1 and every block's convolutions (the
    shortcut projections, which a plain network lacks, left out)."""
    return np.array([v for k, v in norms.items() if "shortcut" not in k])


def degradation_runs(data: Dataset, depths: Sequence[int], seed_list: Sequence[int], *, widths: Sequence[int],
                     epochs: int, batch: int, tx, lr: float, grad_batch: int | None = None,
                     train_eval: int | None = None
                     ) -> tuple[dict[str, list[training.History]], dict[str, list[np.ndarray]]]:
    """Train plain-``d`` and ResNet-``d`` for every depth ``d`` and seed (He et al. Sec. 4.1, Fig. 6 in
    miniature): same data, same optimizer ``tx``, same number of steps, the same batch order for the twins of one
    seed, identical initial weights within a pair.

    Returns ``(histories, grads)``: ``histories["plain-56"]`` is one :class:`~course.training.History` per seed;
    ``grads["plain-56"]`` one array per seed, the gradient norm of every main-path conv layer at initialisation
    (input side first), measured by :func:`first_step_grad_norms` on ``grad_batch`` training examples drawn with
    the seed (default: ``batch``, so the compiled step is the training one).

    ``train_eval=N`` passes on to :func:`course.training.fit`: after every epoch, a fixed subset of N training
    examples is evaluated in eval mode, as the test split is (``History.train_eval_accuracy``), so that training
    and test accuracy are measured the same way. ``History.train_accuracy`` stays the running mean over the
    epoch's batches in train mode (BatchNorm on batch statistics, weights moving)."""
    histories: dict[str, list[training.History]] = {}
    grads: dict[str, list[np.ndarray]] = {}
    n = grad_batch or batch
    for d in depths:
        for s in seed_list:
            pick = np.random.default_rng(s).choice(len(data.x_train), n, replace=False)
            for kind, net in zip(("plain", "ResNet"), twins(d, s, data.input_shape, widths)):
                name = f"{kind}-{d}"
                g = first_step_grad_norms(net, data.x_train[pick], data.y_train[pick], tx, lr, seed=s)
                grads.setdefault(name, []).append(main_path(g))
                histories.setdefault(name, []).append(
                    training.fit(net, data, epochs=epochs, batch_size=batch, tx=tx, seed=s, verbose=False,
                                 train_eval=train_eval))
    return histories, grads


def final(histories: Mapping[str, Sequence[training.History]], metric: str) -> dict[str, seeds_mod.Spread]:
    """The last epoch's ``metric`` of every run, as a :class:`~course.seeds.Spread` over seeds, per network."""
    return {name: seeds_mod.Spread(tuple(float(h[metric][-1]) for h in hs)) for name, hs in histories.items()}


def _style(name: str) -> dict:
    kind, depth = name.split("-")
    return dict(color=DEPTH_COLOURS.get(int(depth), "#444444"), ls="--" if kind == "plain" else "-",
                lw=2 if kind == "plain" else 2.2)


#: What each History metric measures, as the figures title it (course.training.History).
METRIC_TITLES = {
    "train_accuracy": "training error, running mean\n(train mode, over the epoch's batches)",
    "train_eval_accuracy": "training error, end of epoch\n(eval mode, fixed training subset)",
    "test_accuracy": "test error, end of epoch\n(eval mode, the test split)",
}
LEGEND_HANDLE = 4.0  # legend line samples, in font sizes: long enough to show a dash


def _legend_title(kinds: str) -> str:
    return f"{kinds}; plain networks dashed, ResNets solid"


def plot_degradation(histories: Mapping[str, Sequence[training.History]],
                     metrics: Sequence[str] = ("train_accuracy", "train_eval_accuracy", "test_accuracy"),
                     figsize: tuple[float, float] = (12, 4.4)) -> Figure:
    """Error (1 - accuracy, in %) per epoch as the paper's Fig. 6 draws it, one panel per metric of
    :class:`~course.training.History` (a metric no run recorded is left out): the mean over seeds as a line, ± one
    sample standard deviation as a band; plain networks dashed, ResNets solid, one colour per depth. The panels
    are titled with what they measure: the running train-mode mean is not measured the way the test error is."""
    metrics = [m for m in metrics if all(h[m] for hs in histories.values() for h in hs)]
    fig, axes = plt.subplots(1, len(metrics), figsize=figsize, squeeze=False, sharey=True)
    for ax, metric in zip(axes[0], metrics):
        for name, hs in histories.items():
            mean, sd = seeds_mod.stack([[100 * (1 - a) for a in h[metric]] for h in hs])
            epochs = hs[0]["epoch"]
            ax.plot(epochs, mean, marker="o", ms=4, label=name, **_style(name))
            ax.fill_between(epochs, mean - sd, mean + sd, color=_style(name)["color"], alpha=0.15, lw=0)
        ax.set_title(METRIC_TITLES.get(metric, metric), fontsize=10)
        ax.set_xlabel("epoch", fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(0, 100)
        ax.tick_params(labelsize=9)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("error (%)", fontsize=10)
    n = {len(hs) for hs in histories.values()}
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=10, frameon=False,
               handlelength=LEGEND_HANDLE,
               title=_legend_title(f"mean ± sd over {'/'.join(map(str, sorted(n)))} seeds"), title_fontsize=9)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    return fig


def plot_grad_profiles(grads: Mapping[str, Sequence[np.ndarray]], figsize: tuple[float, float] = (10, 3.6)
                       ) -> Figure:
    """Gradient norm of every main-path conv layer at initialisation (log scale), input side on the left: the
    geometric mean over seeds as a line and its ± one sd (of the log) as a band. Plain networks dashed, ResNets
    solid, one colour per depth; the legend's line samples are long enough to show the dashes, and its title
    says which is which."""
    fig, ax = plt.subplots(figsize=figsize)
    for name, runs in grads.items():
        mean, sd = seeds_mod.stack(np.log10(np.stack(runs)))  # (layers,) each, of the log
        layer = np.arange(1, len(mean) + 1)
        ax.plot(layer, 10 ** mean, marker="o", ms=3, label=name, **_style(name))
        ax.fill_between(layer, 10 ** (mean - sd), 10 ** (mean + sd), color=_style(name)["color"], alpha=0.15, lw=0)
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("conv layer (1 = conv1, the input side)", fontsize=10)
    ax.set_ylabel("gradient norm", fontsize=10)
    ax.set_title("gradient norm per conv layer at initialisation, before any training", fontsize=11)
    ax.tick_params(labelsize=9)
    ax.grid(alpha=0.3)
    n = {len(r) for r in grads.values()}
    ax.legend(fontsize=9, ncol=2, handlelength=LEGEND_HANDLE, title_fontsize=9,
              title=_legend_title(f"geometric mean ± sd over {'/'.join(map(str, sorted(n)))} seeds"))
    fig.tight_layout()
    return fig


def plot_block_costs(tables: Mapping[str, CountTable], figsize: tuple[float, float] = (10, 3.4)) -> Figure:
    """Parameters and MACs of several blocks, each on its own axis (they are different quantities), each bar
    labelled with its value."""
    fig, axes = plt.subplots(1, 2, figsize=figsize)
    names = list(tables)
    for ax, (what, values, scale, unit) in zip(axes, (
            ("parameters", [t.params_total for t in tables.values()], 1e3, "thousand"),
            ("MACs per example", [t.macs for t in tables.values()], 1e6, "million"))):
        v = np.array(values) / scale
        bars = ax.bar(range(len(names)), v, color=["#cfe3f7", "#fde2c4", "#e3d4f2"][:len(names)], ec="#444444")
        for b, val in zip(bars, v):
            ax.text(b.get_x() + b.get_width() / 2, b.get_height(), f"{val:,.0f}", ha="center", va="bottom",
                    fontsize=9)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, fontsize=9)
        ax.set_ylabel(f"{what} ({unit})", fontsize=10)
        ax.set_title(what, fontsize=11)
        ax.set_ylim(0, v.max() * 1.15)
        ax.tick_params(axis="y", labelsize=9)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("one block on a 56x56 map", fontsize=11)
    fig.tight_layout()
    return fig


def activation_memory(table: CountTable, bytes_per_value: int = 4) -> list[dict]:
    """The values each layer of ``table`` writes per example (its output shape's size) and their bytes, the
    accounting CS231n's notes use for VGGNet: training keeps every layer's output for the backward pass, so a
    batch of B examples holds B times this. One dict per layer: ``path``, ``kind``, ``output`` (H x W x C),
    ``values``, ``bytes``, ``params``. ReLU outputs (not rows of a CountTable) are not counted: XLA and most
    frameworks fuse or reuse them, so what is stored beyond this depends on the framework."""
    return [{"path": r.path, "kind": r.kind, "output": "x".join(map(str, r.out_shape)),
             "values": int(np.prod(r.out_shape)), "bytes": int(np.prod(r.out_shape)) * bytes_per_value,
             "params": r.params} for r in table.rows]


# ----------------------------------------------------------------------------------------------------------
# A residual block drawn with its computed numbers, and the shape of a tensor through a ResNet (He et al., 2015,
# Fig. 5 and Table 1). Nothing is typed in: the kernel, stride, padding, output shape, weights and MACs written on
# the figure are the ones the counter measured on the model.

_CONV_COLOURS = {1: "#cfe3f7", 3: "#fde2c4", 7: "#e3d4f2"}  # 1x1 blue, 3x3 orange, 7x7 purple


def _shape(s: Sequence[int]) -> str:
    return "x".join(map(str, s))


def _mega(n: int) -> str:
    return f"{n / 1e6:,.1f} M" if n >= 1e5 else f"{n:,}"


def conv_label(r: LayerCount) -> tuple[str, str]:
    """Two lines describing a conv row: what it is, and what it makes and costs."""
    (kh, kw), s, p = r.kernel, r.stride[0], r.padding[0][0]
    head = f"{kh}x{kw} conv, {r.out_shape[-1]}    stride {s}, pad {p}"
    body = f"-> {_shape(r.out_shape)}    {r.params:,} weights    {_mega(r.macs)} MACs"
    return head, body


def _box(ax, x: float, y: float, w: float, h: float, lines: Sequence[str], colour: str, bold_first=True) -> None:
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.01,rounding_size=0.015",
                                fc=colour, ec="#444444", lw=1))
    n = len(lines)
    for i, line in enumerate(lines):
        ax.text(x, y + (n - 1) * 0.0135 - i * 0.027, line, ha="center", va="center", fontsize=9,
                fontweight="bold" if (i == 0 and bold_first) else "normal")


def _arrow(ax, x0: float, y0: float, x1: float, y1: float, text: str = "", **kw) -> None:
    ax.annotate("", (x1, y1), (x0, y0), arrowprops=dict(arrowstyle="-|>", color="#444444", lw=1.2, **kw))
    if text:
        ax.text((x0 + x1) / 2 + 0.015, (y0 + y1) / 2, text, fontsize=9, va="center", color="#555555")


def plot_block(table: CountTable, title: str = "", figsize: tuple[float, float] = (8, 7.5)) -> Figure:
    """A residual block (a :class:`CountTable` of one ``BasicBlock`` or ``BottleneckBlock``) drawn as in the
    paper's Fig. 5: its convolutions top to bottom, each with kernel, filters, stride, padding, output shape,
    weights and MACs; BatchNorm/ReLU between them; the shortcut on the right (identity, or the projection
    with its own numbers); the sum and the final ReLU; totals underneath."""
    main = [r for r in table.rows if not r.path.startswith("shortcut") and r.kernel is not None]
    proj = [r for r in table.rows if r.path.startswith("shortcut") and r.kernel is not None]
    bn_params = sum(r.params for r in table.rows if r.kind == "BatchNorm")
    fig, ax = plt.subplots(figsize=figsize)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    xm, xs, bw = 0.33, 0.83, 0.58
    step = 0.68 / (len(main) + 0.8)
    y = 0.94
    _box(ax, xm, y, 0.34, 0.05, [f"input  {_shape(table.input_shape)}"], "#eeeeee")
    y_in = y
    for i, r in enumerate(main):
        y_next = y - step
        _arrow(ax, xm, y - 0.03, xm, y_next + 0.035,
               "" if i == 0 else ("BN, ReLU" if i < len(main) else ""))
        y = y_next
        _box(ax, xm, y, bw, 0.065, conv_label(r), _CONV_COLOURS.get(r.kernel[0], "#dddddd"))
    y_sum = y - step * 0.7
    _arrow(ax, xm, y - 0.035, xm, y_sum + 0.025, "BN")
    ax.add_patch(Circle((xm, y_sum), 0.022, fc="white", ec="#444444", lw=1.2))
    ax.text(xm, y_sum, "+", ha="center", va="center", fontsize=13)
    # the shortcut: from the input, down the right side, into the sum
    # (with a projection the line stops at the box's edge and resumes below it, never crossing its text)
    ax.plot([xm + 0.17, xs], [y_in, y_in], color="#444444", lw=1.2)
    if proj:
        r = proj[0]
        yp, half = (y_in + y_sum) / 2, 0.085  # half the box's height, its rounded padding included
        head, body = conv_label(r)
        _box(ax, xs, yp, 0.31, 0.15, ["projection (W_s)", head.split("    ")[0] + ", " + head.split("    ")[1],
                                      body.split("    ")[0], "    ".join(body.split("    ")[1:]), "+ BN"],
             "#d8f0d8")
        ax.plot([xs, xs], [y_in, yp + half], color="#444444", lw=1.2)
        ax.plot([xs, xs], [yp - half, y_sum], color="#444444", lw=1.2)
    else:
        ax.plot([xs, xs], [y_in, y_sum], color="#444444", lw=1.2)
        ax.text(xs + 0.01, (y_in + y_sum) / 2, "identity\n(no weights)", fontsize=9, va="center", ha="left")
    _arrow(ax, xs, y_sum, xm + 0.024, y_sum)
    y_out = y_sum - 0.1
    _arrow(ax, xm, y_sum - 0.024, xm, y_out + 0.025, "ReLU")
    out_shape = main[-1].out_shape
    _box(ax, xm, y_out, 0.34, 0.05, [f"output  {_shape(out_shape)}"], "#eeeeee")
    weights = sum(r.params for r in main + proj)
    ax.text(0.5, y_out - 0.08, f"block: {weights:,} conv weights + {bn_params:,} BatchNorm parameters = "
            f"{table.params_total:,} parameters;  {table.macs:,} MACs", ha="center", fontsize=9)
    if title:
        ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_shape_trace(trace: Mapping[str, Sequence[int]], title: str = "",
                     figsize: tuple[float, float] = (10, 3.2)) -> Figure:
    """One rectangle per step of a network (``{"input": (224, 224, 3), "conv1": (112, 112, 64), ...}``):
    its height is the map's side H (to scale), its width grows with the number of channels (log scale), and
    it is labelled H x W x C. Shows where the maps shrink and where the channels grow."""
    names = list(trace)
    fig, ax = plt.subplots(figsize=figsize)
    side = max(s[0] for s in trace.values() if len(s) == 3)
    x = 0.0
    for name in names:
        s = tuple(trace[name])
        h = s[0] / side if len(s) == 3 else 0.02
        c = s[-1]
        w = 0.25 + 0.12 * np.log2(c)
        ax.add_patch(FancyBboxPatch((x, 0.5 - h / 2), w, h, boxstyle="square,pad=0", fc="#cfe3f7", ec="#335577"))
        ax.text(x + w / 2, 0.5 + max(h, 0.1) / 2 + 0.04, _shape(s), ha="center", va="bottom", fontsize=9)
        ax.text(x + w / 2, 0.5 - max(h, 0.1) / 2 - 0.05, name, ha="center", va="top", fontsize=9,
                fontweight="bold")
        x += w + 0.35
    ax.set_xlim(-0.2, x)
    ax.set_ylim(-0.15, 1.2)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------------------
# Table 1 of He et al. (2016), read from a model
def shape_trace(model: resnet.ResNet) -> dict[str, tuple[int, ...]]:
    """The shape of one example after every row of Table 1 (conv1, max_pool, conv2_x, ..., avg_pool, fc),
    traced abstractly (nothing is computed; works on ``build(..., abstract=True)`` models)."""
    model.eval()
    x = jax.ShapeDtypeStruct((1, *model.input_shape), jnp.float32)
    out = nnx.eval_shape(lambda m, x: m.intermediates(x)[1], model, x)  # a dict: its keys come back sorted
    order = ["conv1", "max_pool", *model.stage_names, "avg_pool", "fc"]
    return {k: tuple(out[k].shape[1:]) for k in order if k in out}


def _describe(conv) -> str:
    """A conv layer as Table 1 writes it, plus its stride and padding: "7x7, 64, stride 2, pad 3"."""
    pad = conv.padding[0][0] if isinstance(conv.padding, tuple) else 0  # PointwiseConv: "VALID"
    stride = conv.strides if isinstance(conv.strides, int) else conv.strides[0]
    return f"{conv.kernel_size[0]}x{conv.kernel_size[1]}, {conv.out_features}, stride {stride}, pad {pad}"


def block_layout(model: resnet.ResNet) -> dict[str, str]:
    """Each stage as Table 1 writes it, read from the model: conv2_x of ResNet-50 is
    ``"[1x1, 64; 3x3, 64; 1x1, 256] x 3"``."""
    out = {}
    for stage in model.stage_names:
        blocks = getattr(model, stage)
        convs = [m for name in ("conv1", "conv2", "conv3") if (m := getattr(blocks[0], name, None)) is not None]
        inner = "; ".join(f"{c.kernel_size[0]}x{c.kernel_size[1]}, {c.out_features}" for c in convs)
        out[stage] = f"[{inner}] x {len(blocks)}"
    return out


def table1(model: resnet.ResNet, table=None) -> list[dict]:
    """The model's column of the paper's Table 1, computed from the model: one dict per row with ``layer``
    (Table 1's name), ``what`` (its layers), ``output`` (H x W x C of one example) and, given the model's
    :class:`~course.counting.CountTable`, ``params`` and ``macs`` (the max pool has none; Table 1 lists it
    under conv2_x)."""
    shapes, layout = shape_trace(model), block_layout(model)
    costs = {g["path"]: g for g in table.group(1)} if table is not None else {}
    if "bn1" in costs:  # Table 1's conv1 row includes its BatchNorm
        bn1 = costs.pop("bn1")
        costs["conv1"] = {k: costs["conv1"][k] + bn1[k] for k in ("params", "macs")}
    what = {"conv1": _describe(model.conv1), "max_pool": "3x3 max pool, stride 2, pad 1",
            "avg_pool": "global average pool", "fc": f"fc, {model.fc.out_features} (with bias)", **layout}
    rows = []
    for name, shape in shapes.items():
        row = {"layer": "conv2_x" if name == "max_pool" else name, "what": what[name],
               "output": "x".join(map(str, shape))}
        if costs:
            c = costs.get(name, {"params": 0, "macs": 0})
            row.update(params=c["params"], macs=c["macs"])
        rows.append(row)
    return rows
