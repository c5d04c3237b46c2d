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

import matplotlib.pyplot as plt
import numpy as np
from flax import nnx
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from course import seeds as seeds_mod
from course import training
from course.counting import CountTable
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
            out["/".join(map(str, path))] = np.asarray(m.kernel[...])
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
                     epochs: int, batch: int, tx, lr: float, grad_batch: int | None = None
                     ) -> tuple[dict[str, list[training.History]], dict[str, list[np.ndarray]]]:
    """Train plain-``d`` and ResNet-``d`` for every depth ``d`` and seed (He et al. Sec. 4.1, Fig. 6 in
    miniature): same data, same optimizer ``tx``, same number of steps, the same batch order for the twins of one
    seed, identical initial weights within a pair.

    Returns ``(histories, grads)``: ``histories["plain-56"]`` is one :class:`~course.training.History` per seed;
    ``grads["plain-56"]`` one array per seed, the gradient norm of every main-path conv layer at initialisation
    (input side first), measured by :func:`first_step_grad_norms` on ``grad_batch`` training examples drawn with
    the seed (default: ``batch``, so the compiled step is the training one)."""
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
                    training.fit(net, data, epochs=epochs, batch_size=batch, tx=tx, seed=s, verbose=False))
    return histories, grads


def final(histories: Mapping[str, Sequence[training.History]], metric: str) -> dict[str, seeds_mod.Spread]:
    """The last epoch's ``metric`` of every run, as a :class:`~course.seeds.Spread` over seeds, per network."""
    return {name: seeds_mod.Spread(tuple(float(h[metric][-1]) for h in hs)) for name, hs in histories.items()}


def _style(name: str) -> dict:
    kind, depth = name.split("-")
    return dict(color=DEPTH_COLOURS.get(int(depth), "#444444"), ls="--" if kind == "plain" else "-",
                lw=2 if kind == "plain" else 2.2)


def plot_degradation(histories: Mapping[str, Sequence[training.History]],
                     metrics: Sequence[str] = ("train_accuracy", "test_accuracy"),
                     figsize: tuple[float, float] = (10, 4.4)) -> Figure:
    """Error (1 - accuracy, in %) per epoch as the paper's Fig. 6 draws it, one panel per metric: the mean over
    seeds as a line, ± one sample standard deviation as a band; plain networks dashed, ResNets solid, one colour
    per depth."""
    fig, axes = plt.subplots(1, len(metrics), figsize=figsize, squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for name, hs in histories.items():
            mean, sd = seeds_mod.stack([[100 * (1 - a) for a in h[metric]] for h in hs])
            epochs = hs[0]["epoch"]
            ax.plot(epochs, mean, marker="o", ms=4, label=name, **_style(name))
            ax.fill_between(epochs, mean - sd, mean + sd, color=_style(name)["color"], alpha=0.15, lw=0)
        ax.set_title(metric.replace("_accuracy", " error").replace("train", "training"), fontsize=11)
        ax.set_xlabel("epoch", fontsize=10)
        ax.set_ylabel("error (%)", fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(0, 100)
        ax.tick_params(labelsize=9)
        ax.grid(alpha=0.3)
    n = {len(hs) for hs in histories.values()}
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=10, frameon=False,
               title=f"mean ± sd over {'/'.join(map(str, sorted(n)))} seeds; plain dashed, ResNet solid",
               title_fontsize=9)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    return fig


def plot_grad_profiles(grads: Mapping[str, Sequence[np.ndarray]], figsize: tuple[float, float] = (10, 3.6)
                       ) -> Figure:
    """Gradient norm of every main-path conv layer at initialisation (log scale), input side on the left: the
    geometric mean over seeds as a line and its ± one sd (of the log) as a band."""
    fig, ax = plt.subplots(figsize=figsize)
    for name, runs in grads.items():
        logs = np.log10(np.stack(runs))  # (seeds, layers)
        mean, sd = logs.mean(0), (logs.std(0, ddof=1) if len(logs) > 1 else np.zeros(logs.shape[1]))
        layer = np.arange(1, logs.shape[1] + 1)
        ax.plot(layer, 10 ** mean, marker="o", ms=3, label=name, **_style(name))
        ax.fill_between(layer, 10 ** (mean - sd), 10 ** (mean + sd), color=_style(name)["color"], alpha=0.15, lw=0)
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("conv layer (1 = conv1, the input side)", fontsize=10)
    ax.set_ylabel("gradient norm", fontsize=10)
    ax.set_title("gradient norm per conv layer at initialisation, before any training", fontsize=11)
    ax.tick_params(labelsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, ncol=2)
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
