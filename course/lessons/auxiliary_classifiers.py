"""Notebook 03 (auxiliary classifiers): a deep, narrow plain network where GoogLeNet's auxiliary heads matter,
the measurements the notebook makes on it and on ``googlenet_mini``, and its figures.

Szegedy et al., "Going deeper with convolutions", 2014 (arXiv:1409.4842), Sec. 5: the auxiliary classifiers
were added because "the ability to propagate gradients back through all the layers in an effective manner was a
concern"; their loss is added with weight 0.3 and they are discarded at inference. The paper trained without
BatchNorm, with SGD and momentum 0.9. Lee et al., "Deeply-Supervised Nets", 2014 (arXiv:1409.5185), put a
classifier after every layer for the same reason.

* :class:`PlainNet`: ``depth`` 3x3 convolutions of ``width`` channels (+ ReLU, optionally BatchNorm), classifier
  heads after the layers in ``aux_after``, a final linear classifier. It has GoogLeNet's interface
  (``intermediates`` -> (logits, {"aux1": ...}), ``deterministic``), so ``googlenet_loss`` trains it.
* :func:`loss_part_grads`: the gradient of each loss term (main, aux1, aux2, ...) separately, from which
  :func:`rms_per_layer` (gradient per weight: norms grow with a layer's size, RMS does not) and
  :func:`cosine` (does a head push the stem in the main loss's direction?) are computed.
* :func:`run_plain`: one seeded SGD run recording test accuracy and the stem's relative update per epoch.
* :func:`layer_probe`: the control for "the heads make the middle of the network discriminative": a linear
  classifier run to convergence on the frozen features of one layer (or on the raw pixels), the same for every
  network, so that it measures the features and not how far a head's own training got.
* :func:`block_grad_norms`: GoogLeNet's per-layer gradient norms summed into its blocks (stem convs, rows).
* Figures: :func:`plot_network` (GoogLeNet's layout with its three softmax outputs), :func:`plot_layer_series`,
  :func:`plot_bands`. They take data and return a Figure; none calls ``plt.show()``.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from flax import nnx
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

from course import paths, training, transfer
from course.data import Dataset
from course.models.inception import (ConvSpec, GoogLeNet, InceptionRow, LRNSpec, PoolSpec, googlenet_loss)

# Glorot/LeCun-style "plain" initialization, variance 1/fan_in (Caffe's "xavier" filler, which the BVLC
# reproduction of GoogLeNet used): every ReLU layer halves the signal's variance, so a deep stack without
# BatchNorm shrinks its activations and its gradients geometrically, the setting the paper worried about.
LECUN_NORMAL = nnx.initializers.lecun_normal()


class Head(nnx.Module):
    """A classifier head on a (B, H, W, C) map: flatten, fully connected ``hidden`` + ReLU, linear to the classes.
    (GoogLeNet's heads also pool, reduce with a 1x1 conv and drop 70% of the hidden units; at 8x8x16 no
    reduction is needed, and without dropout the head's loss is its plain cross-entropy.)"""

    def __init__(self, in_features: int, num_classes: int, hidden: int, *, kernel_init, rngs: nnx.Rngs):
        self.fc = nnx.Linear(in_features, hidden, kernel_init=kernel_init, rngs=rngs)
        self.classifier = nnx.Linear(hidden, num_classes, kernel_init=kernel_init, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], -1)                  # (B, H * W * C)
        return self.classifier(nnx.relu(self.fc(x)))  # (B, num_classes)


class PlainNet(nnx.Module):
    """A deep, narrow chain of 3x3 convolutions (no residuals) with auxiliary heads, the paper's concern in its
    purest form. Layers ``conv1`` .. ``conv{depth}``, each conv (bias unless ``batchnorm``) [+ BatchNorm] + ReLU,
    all on the input's H x W (SAME padding); heads ``aux1``, ``aux2``, ... read the layers listed in
    ``aux_after`` (1-based); the main classifier ``fc`` reads the last layer, flattened.

    ``model(x)`` returns the main logits; :meth:`intermediates` also returns the heads' logits in train mode
    (``deterministic=False``) or when ``heads=True`` (to measure a trained head's accuracy in eval mode).
    """

    def __init__(self, depth: int = 12, width: int = 16, aux_after: Sequence[int] = (4, 8), *,
                 input_shape: Sequence[int] = (8, 8, 1), num_classes: int = 10, batchnorm: bool = False,
                 hidden: int = 32, kernel_init=LECUN_NORMAL, rngs: nnx.Rngs):
        if not all(1 <= a < depth for a in aux_after):
            raise ValueError(f"aux_after={tuple(aux_after)} must name layers 1..{depth - 1} (1-based; the main "
                             f"classifier already reads layer {depth})")
        h, w, c = (int(s) for s in input_shape)
        self.input_shape, self.depth, self.aux_after = (h, w, c), depth, tuple(int(a) for a in aux_after)
        self.deterministic = False
        convs, norms = [], []
        for i in range(depth):
            convs.append(nnx.Conv(c if i == 0 else width, width, (3, 3), padding="SAME", use_bias=not batchnorm,
                                  kernel_init=kernel_init, rngs=rngs))
            norms.append(nnx.BatchNorm(width, epsilon=1e-3, momentum=0.9, rngs=rngs) if batchnorm else None)
        self.convs, self.norms = nnx.List(convs), nnx.List(norms)
        self.heads = nnx.List([Head(h * w * width, num_classes, hidden, kernel_init=kernel_init, rngs=rngs)
                               for _ in self.aux_after])
        self.fc = nnx.Linear(h * w * width, num_classes, kernel_init=kernel_init, rngs=rngs)

    def intermediates(self, x: jax.Array, heads: bool | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"this PlainNet was built for inputs (B, {', '.join(map(str, self.input_shape))}), "
                             f"got {tuple(x.shape)}; build it with input_shape={tuple(x.shape[1:])}")
        with_heads = (not self.deterministic) if heads is None else heads
        out: dict[str, jax.Array] = {}
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms), 1):
            x = conv(x)                                  # (B, H, W, width)
            x = out[f"conv{i}"] = nnx.relu(norm(x) if norm is not None else x)
            if with_heads and i in self.aux_after:
                k = self.aux_after.index(i)
                out[f"aux{k + 1}"] = self.heads[k](x)     # (B, num_classes)
        return self.fc(x.reshape(x.shape[0], -1)), out   # (B, num_classes)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.intermediates(x)[0]


@partial(nnx.jit, static_argnames=("depth", "width", "aux_after", "input_shape", "batchnorm"))
def build_plain(rngs: nnx.Rngs, depth: int = 12, width: int = 16, aux_after: tuple[int, ...] = (4, 8),
                input_shape: tuple[int, ...] = (8, 8, 1), batchnorm: bool = False) -> PlainNet:
    """:class:`PlainNet` built under ``nnx.jit``: one compile per architecture, then a fraction of a second per
    seed (``build_plain(nnx.Rngs(seed), ...)``)."""
    return PlainNet(depth, width, aux_after, input_shape=input_shape, batchnorm=batchnorm, rngs=rngs)


# ----------------------------------------------------------------------------------------------------------
# Gradients, term by term
def _ce(z: jax.Array, y: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(z, y).mean()


@nnx.jit
def _loss_terms(model, x, y):
    logits, out = model.intermediates(x)
    return {"main": _ce(logits, y), **{k: _ce(v, y) for k, v in out.items() if k.startswith("aux")}}


def loss_terms(model: nnx.Module, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Each loss term on the batch (x, y), in the model's current mode: {"main": ..., "aux1": ..., ...} (the heads
    appear in train mode only). Dropout draws from the model's rngs: pass a clone to keep its stream."""
    return {k: float(v) for k, v in _loss_terms(model, jnp.asarray(x), jnp.asarray(y)).items()}


@nnx.jit
def _part_grads(model, x, y):
    def term(m, key):
        logits, out = m.intermediates(x)
        return _ce(logits if key == "main" else out[key], y)

    n_heads = len(model.aux_heads()) if isinstance(model, GoogLeNet) else len(model.aux_after)
    keys = ["main"] + [f"aux{i}" for i in range(1, n_heads + 1)]
    return {k: nnx.grad(lambda m, k=k: term(m, k))(model) for k in keys}


def loss_part_grads(model: nnx.Module, x: np.ndarray, y: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """The gradient of each loss term separately, ``{"main": {layer: kernel grad}, "aux1": {...}, ...}``, on
    the batch (x, y) in train mode (the heads computed; dropout draws from the model's rngs, so pass a clone if
    its random stream matters). Layers are keyed by path ("conv1", "inception3a/conv1x1/conv", ...), kernels
    only, in nnx.iter_modules order (course.paths.module_order). The model is left in eval mode."""
    model.train()
    grads = _part_grads(model, jnp.asarray(x), jnp.asarray(y))
    model.eval()
    # jit returns dicts key-sorted: main first again
    return {term: {layer: np.asarray(g) for layer, g in paths.layer_arrays(model, grads[term]).items()}
            for term in sorted(grads, key=lambda k: (k != "main", k))}


def _plain_name(path: str) -> str:
    """PlainNet paths "convs/0" -> "conv1", "heads/1/fc" -> "aux2/fc"; other paths unchanged."""
    parts = path.split("/")
    if parts[0] == "convs":
        return f"conv{int(parts[1]) + 1}"
    if parts[0] == "heads":
        return "/".join([f"aux{int(parts[1]) + 1}"] + parts[2:])
    return path


def combine(parts: Mapping[str, Mapping[str, np.ndarray]], aux_weight: float) -> dict[str, np.ndarray]:
    """The gradient of main + ``aux_weight`` x (sum of the heads' losses), layer by layer, from
    :func:`loss_part_grads` (gradients are linear in the loss)."""
    out = {k: v.copy() for k, v in parts["main"].items()}
    for term, g in parts.items():
        if term != "main":
            for k, v in g.items():
                out[k] = out[k] + aux_weight * v
    return out


def rms_per_layer(grads: Mapping[str, np.ndarray], layers: Sequence[str] | None = None) -> dict[str, float]:
    """Root mean square of each layer's gradient, per weight: sqrt(||g||^2 / n). A layer's norm grows with its
    number of weights; its RMS is comparable across layers, and with SGD it is the typical step of one weight
    (divided by the learning rate). ``layers``: which keys, in order (default all). Names made readable."""
    keys = list(grads) if layers is None else list(layers)
    return {_plain_name(k): float(np.sqrt(np.mean(np.square(grads[k])))) for k in keys}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the angle between two gradients (flattened): 1 same direction, 0 unrelated, -1 opposed."""
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def conv_layers(model: PlainNet) -> list[str]:
    """The paths of a PlainNet's convolutions in forward order, as :func:`loss_part_grads` keys them."""
    return [f"convs/{i}" for i in range(model.depth)]


# ----------------------------------------------------------------------------------------------------------
# Training
def head_accuracies(model: PlainNet, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Test accuracy of the main classifier and of every auxiliary head, in eval mode (BatchNorm on its running
    statistics): are the middle layers' features already discriminative?"""
    model.eval()
    logits, out = _eval_heads(model, jnp.asarray(x))
    accs = {"main": float((logits.argmax(-1) == y).mean())}
    accs.update({k: float((v.argmax(-1) == y).mean()) for k, v in out.items() if k.startswith("aux")})
    return accs


@nnx.jit
def _eval_heads(model, x):
    logits, out = model.intermediates(x, heads=True)
    return logits, {k: v for k, v in out.items() if k.startswith("aux")}


def run_plain(seed: int, ds: Dataset, aux_weight: float, tx: optax.GradientTransformation, *, epochs: int,
              batch_size: int, batchnorm: bool = False, **arch) -> dict:
    """One run: build :func:`build_plain` from ``seed``, train it with ``googlenet_loss`` (``aux_weight`` traced:
    every weight shares one compiled step) and optimizer ``tx`` (pass the same object to every run, so the
    step compiles once), batches shuffled from ``seed``. Returns the per-epoch main test accuracy
    ("test_accuracy"), the first convolution's relative update ||w - w0|| / ||w0|| per epoch ("stem_update"),
    the final accuracy of each head ("heads") and the trained network itself ("model", in eval mode).
    ``build_plain(nnx.Rngs(seed), ...)`` with the same arguments rebuilds the network as it was before training."""
    model = build_plain(nnx.Rngs(seed), batchnorm=batchnorm, **arch)
    w0 = np.asarray(model.convs[0].kernel[...])
    moved = lambda: float(np.linalg.norm(np.asarray(model.convs[0].kernel[...]) - w0) / np.linalg.norm(w0))  # noqa

    def record(epoch, m, hist):
        hist.extra.setdefault("stem_update", []).append(moved())

    h = training.fit(model, ds, epochs=epochs, batch_size=batch_size, tx=tx, seed=seed, loss_fn=googlenet_loss,
                     loss_params=jnp.float32(aux_weight), verbose=False, callback=record)
    return {"test_accuracy": h.test_accuracy, "stem_update": h["stem_update"],
            "heads": head_accuracies(model, ds.x_test, ds.y_test), "model": model}


# ----------------------------------------------------------------------------------------------------------
# The control: is the middle of the network discriminative without the heads?
@partial(nnx.jit, static_argnames=("layer",))
def _layer(model, x, layer):
    return model.intermediates(x, heads=False)[1][layer]


def layer_features(model: PlainNet, x: np.ndarray, layer: str) -> np.ndarray:
    """The frozen activations of ``layer`` ("conv1" .. "conv{depth}", after the ReLU: what a head after that
    layer reads) for the images ``x`` (N, H, W, C), in eval mode, flattened to (N, H * W * width)."""
    model.eval()
    f = np.asarray(_layer(model, jnp.asarray(x), layer))  # (N, H, W, width)
    return f.reshape(len(f), -1)


def layer_probe(ds: Dataset, model: PlainNet | None = None, layer: str = "conv4") -> float:
    """Test accuracy of a linear classifier fitted to convergence on frozen features: ``layer``'s activations
    of ``model`` for ``ds``'s training and test images, or the raw pixels when ``model`` is None. The classifier
    is :func:`course.transfer.converged_probe` (each feature standardised on the training images, then
    multinomial logistic regression by L-BFGS): deterministic, with nothing to tune per network, so different
    networks' layers are compared by what their features hold, not by how far a head's training got.

    The fit runs with one BLAS thread: on the course's 2-core machine, busy with other processes, one fit of this
    size (1,438 x 1,024 features) took 1.4 s with OpenBLAS's two threads and 0.16 s with one; a run pinned to
    one core (``make seeds``) would oversubscribe it the same way."""
    from threadpoolctl import threadpool_limits

    if model is None:
        f_train, f_test = ds.x_train.reshape(len(ds.x_train), -1), ds.x_test.reshape(len(ds.x_test), -1)
    else:
        f_train, f_test = layer_features(model, ds.x_train, layer), layer_features(model, ds.x_test, layer)
    with threadpool_limits(1):
        return transfer.converged_probe(f_train, ds.y_train, f_test, ds.y_test)


# ----------------------------------------------------------------------------------------------------------
# GoogLeNet's blocks
def block_names(model: GoogLeNet) -> list[str]:
    """GoogLeNet's blocks in forward order: the stem convs, one per Inception row, then "fc"."""
    names = [item.name if isinstance(item, ConvSpec) else f"inception{item.name}"
             for item in model.layout if isinstance(item, (ConvSpec, InceptionRow))]
    return names + ["fc"]


def block_grad_norms(norms: Mapping[str, float], model: GoogLeNet) -> dict[str, float]:
    """Sum per-layer gradient norms (``course.training.layer_grad_norms``) into one L2 norm per block, in
    forward order (input side first), labelled "conv1", ..., "3a", ..., "5b", "fc". Aux heads are left out."""
    out = {}
    for name in block_names(model):
        sq = sum(v * v for k, v in norms.items() if k.split("/")[0] == name)
        out[name.replace("inception", "")] = math.sqrt(sq)
    return out


def block_rms(grads: Mapping[str, np.ndarray], model: GoogLeNet) -> dict[str, float]:
    """Per-weight RMS gradient of each GoogLeNet block (all its kernels together), in forward order, labelled
    as :func:`block_grad_norms`; ``grads`` as :func:`combine` returns them."""
    out = {}
    for name in block_names(model):
        gs = [g.ravel() for k, g in grads.items() if k.split("/")[0] == name]
        out[name.replace("inception", "")] = float(np.sqrt(np.mean(np.square(np.concatenate(gs)))))
    return out


# ----------------------------------------------------------------------------------------------------------
# Figures
def plot_network(model: GoogLeNet, figsize: tuple[float, float] = (12, 3.4)) -> Figure:
    """GoogLeNet drawn from its own layout, input on the left: one box per stem convolution, pool, LRN and
    Inception row, the main classifier at the end, and each auxiliary head branching off the row it reads,
    every classifier ending in its softmax. Nothing is typed in: boxes come from ``model.layout`` and
    ``model.aux_heads()``."""
    fig, ax = plt.subplots(figsize=figsize)
    heads = model.aux_heads()
    x, y0, w, h = 0.0, 0.0, 0.9, 0.9
    colour = {ConvSpec: "#9ecae1", PoolSpec: "#d9d9d9", LRNSpec: "#f0f0f0", InceptionRow: "#fdae6b"}

    def box(xc, yc, text, fc, fontsize=9, width=w):
        ax.add_patch(FancyBboxPatch((xc - width / 2, yc - h / 2), width, h, boxstyle="round,pad=0.02", fc=fc,
                                    ec="k", lw=0.8))
        ax.text(xc, yc, text, ha="center", va="center", fontsize=fontsize)

    def label(item):
        if isinstance(item, ConvSpec):
            return f"conv\n{item.kernel}x{item.kernel}"
        if isinstance(item, PoolSpec):
            return f"pool\n{item.kernel}x{item.kernel}/{item.stride}"
        if isinstance(item, LRNSpec):
            return "LRN"
        return item.name

    items = list(model.layout)
    for item in items:
        box(x, y0, label(item), colour[type(item)])
        if isinstance(item, InceptionRow) and item.name in heads:
            i = model.aux_after.index(item.name) + 1
            ax.annotate("", (x, y0 + 1.8 - h / 2), (x, y0 + h / 2), arrowprops=dict(arrowstyle="->", lw=1))
            box(x, y0 + 1.8, f"aux{i}\nhead", "#c7e9c0")
            box(x, y0 + 3.0, f"softmax\n{i}", "#fcbba1", width=1.25)  # wide enough for its label
            ax.annotate("", (x, y0 + 3.0 - h / 2), (x, y0 + 1.8 + h / 2), arrowprops=dict(arrowstyle="->", lw=1))
        ax.annotate("", (x + 1 - w / 2, y0), (x + w / 2, y0), arrowprops=dict(arrowstyle="->", lw=0.8))
        x += 1
    for text, fc in (("avg\npool", colour[PoolSpec]), ("fc", "#c7e9c0")):
        box(x, y0, text, fc)
        ax.annotate("", (x + 1 - w / 2, y0), (x + w / 2, y0), arrowprops=dict(arrowstyle="->", lw=0.8))
        x += 1
    box(x + 0.15, y0, "softmax\n0", "#fcbba1", width=1.25)
    ax.set_xlim(-0.6, x + 0.9)
    ax.set_ylim(-0.8, 3.7)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(f"{len(heads) + 1} softmax outputs: the main one (0), and one per auxiliary head, after "
                 f"{' and '.join(heads)} (training only)", fontsize=11)
    fig.tight_layout()
    return fig


def plot_layer_series(series: Mapping[str, Mapping[str, object]], ylabel: str, title: str = "",
                      log: bool = True, figsize: tuple[float, float] = (10, 3.4),
                      linestyles: Mapping[str, str] | None = None) -> Figure:
    """One line per series across layers in forward order (input on the left). Values are numbers or
    ``course.seeds.Spread`` (then the line is the mean over seeds and error bars show the sd). ``linestyles``
    maps a series name to a matplotlib line style ("--"): a dashed line stays visible on a solid one it
    coincides with."""
    fig, ax = plt.subplots(figsize=figsize)
    for name, vals in series.items():
        ys = [getattr(v, "mean", v) for v in vals.values()]
        es = [getattr(v, "sd", 0.0) for v in vals.values()]
        ax.errorbar(range(len(ys)), ys, yerr=es, marker="o", ms=4, capsize=3, label=name,
                    ls=(linestyles or {}).get(name, "-"))
    longest = max(series.values(), key=len)
    ax.set_xticks(range(len(longest)))
    ax.set_xticklabels(list(longest), rotation=45 if len(longest) > 14 else 0, fontsize=9)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("layer (input side on the left)", fontsize=10)
    ax.set_ylabel(ylabel, fontsize=10)
    if title:
        ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


def plot_bands(panels: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]], ylabel: Mapping[str, str],
               log: Sequence[str] = (), figsize: tuple[float, float] = (11, 3.4)) -> Figure:
    """Side-by-side panels of curves over epochs: ``panels[title][run] = (mean (E,), sd (E,))`` (what
    ``course.seeds.stack`` returns), drawn as a line with a +-1 sd band; integer epoch ticks. One legend, to the
    right of the last panel, where it covers no band."""
    fig, axes = plt.subplots(1, len(panels), figsize=figsize, squeeze=False)
    for ax, (title, curves) in zip(axes[0], panels.items()):
        for name, (mean, sd) in curves.items():
            ep = np.arange(1, len(mean) + 1)
            line, = ax.plot(ep, mean, marker="o", ms=4, label=name)
            ax.fill_between(ep, mean - sd, mean + sd, alpha=0.2, color=line.get_color())
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("epoch", fontsize=10)
        ax.set_ylabel(ylabel.get(title, ""), fontsize=10)
        ax.set_xticks(np.arange(1, max(len(m) for m, _ in curves.values()) + 1))
        if title in log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=9)
    axes[0][-1].legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return fig
