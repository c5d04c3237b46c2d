"""Jitted NNX train and eval steps, a ``fit`` loop that returns a history, and per-layer gradient norms.

A *loss function* has the signature ``loss_fn(model, x, y, params) -> (loss, logits)``: ``params`` is any pytree
of arrays (an auxiliary-loss weight, a distillation temperature...) passed *traced*, so changing it does not
recompile the step (compiling costs seconds on a CPU, so compile once and pass what varies).
``logits`` are the main head's, used for accuracy.

Everything is deterministic given the seed: parameters come from ``nnx.Rngs(seed)``, the batch order from
``numpy.random.default_rng(seed + epoch)``.
"""
from __future__ import annotations

import dataclasses
import functools
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from course import paths
from course.data import Dataset
from course.device_data import DeviceData, on_device, to_float

LossFn = Callable[[nnx.Module, jax.Array, jax.Array, Any], tuple[jax.Array, jax.Array]]


def cross_entropy(model: nnx.Module, x: jax.Array, y: jax.Array, params: Any = None) -> tuple[jax.Array, jax.Array]:
    """Mean softmax cross-entropy of ``model(x)`` against integer labels ``y``; returns (loss, logits). The
    softmax runs on float32 logits whatever the model computes in (see :mod:`course.precision`)."""
    logits = model(x)  # (B, num_classes)
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), y).mean(), logits


def _train_step(model: nnx.Module, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array,
                loss_fn: LossFn = cross_entropy, loss_params: Any = None) -> tuple[jax.Array, jax.Array]:
    """One optimizer step on batch (x, y); returns (loss, accuracy) of the batch before the step."""
    def f(m):
        return loss_fn(m, x, y, loss_params)

    (loss, logits), grads = nnx.value_and_grad(f, has_aux=True)(model)
    optimizer.update(model, grads)
    return loss, (logits.argmax(-1) == y).mean()


def _pure_step(static, leaves, x, y, loss_params, loss_fn):
    """:func:`_train_step` as a pure function of the split state's leaves: ``-> (new leaves, loss, accuracy)``."""
    graphdef, treedef = static
    model, opt = nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))
    loss, acc = _train_step(model, opt, x, y, loss_fn, loss_params)
    return jax.tree.leaves(nnx.state((model, opt))), loss, acc


# The one compiled train step, used by fit, the train command and the benchmark. ``nnx.jit`` would walk the whole
# module graph on every call (a jitted no-op taking model and optimizer: small_cnn 1.9 ms, resnet20 30 ms, resnet50
# about 100 ms of host time on a 2-core CPU). This step takes the split state as a flat list of arrays instead, with
# the graph and tree structure static: jax's C++ dispatch flattens a list of arrays without calling into Python
# (for resnet50's 591 arrays, measured side by side under load: an nnx.State argument 15.3 ms, the flat list 2.4
# ms). The input leaves are donated, so the update is written in place (on the CPU too, with jax 0.10); callers pass
# leaves of their own (see split_state), never buffers that a module or a clone still holds.
pure_train_step = jax.jit(_pure_step, static_argnames=("static", "loss_fn"), donate_argnames=("leaves",))


def split_state(*nodes) -> tuple[tuple, list[jax.Array]]:
    """``nnx.split(nodes)`` as ``(static, leaves)`` for :data:`pure_train_step`: ``static`` = (graphdef, treedef),
    hashable; ``leaves`` = copies of the state's arrays, safe to donate even when another module (an
    ``nnx.clone``, a snapshot) still shares the original buffers."""
    graphdef, state = nnx.split(nodes)
    leaves, treedef = jax.tree.flatten(state)
    return (graphdef, treedef), [jnp.copy(a) for a in leaves]


def merge_state(nodes: tuple, static: tuple, leaves: list[jax.Array]) -> None:
    """Write ``leaves`` (from :data:`pure_train_step`) back into the modules ``nodes``, in place."""
    nnx.update(nodes, jax.tree.unflatten(static[1], leaves))


def train_step(model: nnx.Module, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array,
               loss_fn: LossFn = cross_entropy, loss_params: Any = None) -> tuple[jax.Array, jax.Array]:
    """One optimizer step on the modules themselves (split, :data:`pure_train_step`, merge back); returns the
    batch's (loss, accuracy) before the step. For loops, :func:`fit` splits once per epoch instead."""
    static, leaves = split_state(model, optimizer)
    leaves, loss, acc = pure_train_step(static, leaves, x, y, loss_params, loss_fn)
    merge_state((model, optimizer), static, leaves)
    return loss, acc


@nnx.jit(static_argnames=("loss_fn",))
def eval_step(model: nnx.Module, x: jax.Array, y: jax.Array, mask: jax.Array,
              loss_fn: LossFn = cross_entropy, loss_params: Any = None) -> tuple[jax.Array, jax.Array]:
    """Summed per-example loss and number correct over the examples where ``mask`` is true."""
    logits = model(to_float(x)).astype(jnp.float32)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return (loss * mask).sum(), ((logits.argmax(-1) == y) * mask).sum()


@nnx.jit
def _logits(model: nnx.Module, x: jax.Array) -> jax.Array:
    return model(to_float(x))


def padded_batches(x: np.ndarray, batch_size: int):
    """Fixed-size batches (the last one zero-padded) so evaluation compiles one program; yields (xb, n_real)."""
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        n = len(xb)
        if n < batch_size:
            xb = np.concatenate([xb, np.zeros((batch_size - n, *xb.shape[1:]), xb.dtype)])
        yield xb, n


def predict(model: nnx.Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits (N, num_classes) of ``model`` in eval mode."""
    model.eval()
    sizes = [min(batch_size, len(x) - i) for i in range(0, len(x), batch_size)]
    xs = on_device(xb for xb, _ in padded_batches(x, batch_size))  # the next batch's copy overlaps this one
    return np.concatenate([np.asarray(_logits(model, xb))[:n] for xb, n in zip(xs, sizes)])


def evaluate(model: nnx.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 256, mesh=None) -> dict[str, float]:
    """Mean cross-entropy loss and accuracy of ``model`` (eval mode) on (x, y). With a ``mesh`` spanning several
    processes (each holding all of x and y), every batch is split over it and each process copies only its rows."""
    model.eval()
    put = jax.device_put
    if mesh is not None and jax.process_count() > 1:
        from course.parallel import place_rows

        n = mesh.devices.size
        batch_size, put = -(-batch_size // n) * n, lambda b: place_rows(mesh, *b)  # a multiple of the devices
    def host_batches():
        for i, (xb, n) in enumerate(padded_batches(x, batch_size)):
            yb = np.zeros(len(xb), np.int32)
            yb[:n] = y[i * batch_size:i * batch_size + n]
            yield xb, yb, np.arange(len(xb)) < n

    sums = [eval_step(model, *b) for b in on_device(host_batches(), put=put)]  # dispatched without waiting
    return {"loss": sum(float(s[0]) for s in sums) / len(x), "accuracy": sum(float(s[1]) for s in sums) / len(x)}


@dataclasses.dataclass
class History:
    """Per-epoch metrics of a :func:`fit` run. ``h["test_accuracy"]`` is a list, one value per epoch.

    Two kinds of training-set figures, not to be compared with each other: ``train_loss`` and ``train_accuracy``
    are *running* means over the epoch's batches, in train mode (dropout on, BatchNorm on batch statistics),
    while the weights move; ``train_eval_loss`` and ``train_eval_accuracy`` (with ``fit(..., train_eval=N)``)
    are measured exactly as the test figures are: in eval mode, after the epoch, on a fixed subset of N training
    examples. Compare training with test accuracy only through the second kind."""

    epoch: list[int] = dataclasses.field(default_factory=list)
    train_loss: list[float] = dataclasses.field(default_factory=list)       # running mean, train mode
    train_accuracy: list[float] = dataclasses.field(default_factory=list)   # running mean, train mode
    test_loss: list[float] = dataclasses.field(default_factory=list)
    test_accuracy: list[float] = dataclasses.field(default_factory=list)
    train_eval_loss: list[float] = dataclasses.field(default_factory=list)      # eval mode, end of epoch
    train_eval_accuracy: list[float] = dataclasses.field(default_factory=list)  # eval mode, end of epoch
    seconds: list[float] = dataclasses.field(default_factory=list)
    extra: dict[str, list] = dataclasses.field(default_factory=dict)  # what callbacks record, per epoch

    def __getitem__(self, key: str) -> list:
        return getattr(self, key) if key in self.__dataclass_fields__ else self.extra[key]

    def final(self) -> dict[str, float]:
        """The last epoch's metrics."""
        keys = ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "train_eval_loss",
                "train_eval_accuracy")
        return {k: self[k][-1] for k in keys if self[k]}


@functools.lru_cache(maxsize=None)
def adam(lr: float) -> optax.GradientTransformation:
    """``optax.adam(lr)``, one object per learning rate. The transform is part of the optimizer's static
    structure, so a fresh ``optax.adam`` per ``fit`` would recompile the train step every time (seconds on a
    CPU); with this cache, runs with the same learning rate share one compiled step."""
    return optax.adam(lr)


def make_optimizer(model: nnx.Module, lr: float | optax.Schedule = 1e-3,
                   tx: optax.GradientTransformation | None = None) -> nnx.Optimizer:
    """``nnx.Optimizer`` over the model's ``nnx.Param``s; Adam with learning rate ``lr`` unless ``tx`` is given."""
    if tx is None:
        tx = adam(lr) if isinstance(lr, (int, float)) else optax.adam(lr)
    return nnx.Optimizer(model, tx, wrt=nnx.Param)


def fit(model: nnx.Module, data: Dataset | tuple[np.ndarray, np.ndarray], *, epochs: int = 5,
        batch_size: int = 64, lr: float = 1e-3, tx: optax.GradientTransformation | None = None,
        optimizer: nnx.Optimizer | None = None, seed: int = 0, loss_fn: LossFn = cross_entropy,
        loss_params: Any = None, test: tuple[np.ndarray, np.ndarray] | None = None, verbose: bool = True,
        callback: Callable[[int, nnx.Module, History], None] | None = None, first_epoch: int = 1,
        mesh=None, progress: bool = False, train_eval: int | None = None) -> History:
    """Train ``model`` in place for ``epochs`` epochs and return its :class:`History`.

    ``data`` is a :class:`~course.data.Dataset` (its test split is evaluated after every epoch), an (x, y)
    pair (then ``test`` may give one), or a source with an ``epoch(batch_size, seed)`` method yielding batches
    on the device (:mod:`course.device_data`: ``DeviceData``, ``SyntheticData``; :mod:`course.folder_data`).
    ``test`` is an (x, y) pair or a function ``test(model) -> {"loss": ..., "accuracy": ...}``. The training
    split goes to the device once and every batch is gathered there. Batches are shuffled with ``seed + epoch`` (the order of ``course.data.batches``) and the last partial
    batch is dropped so the step compiles once. With ``verbose`` one line per epoch is printed (rounded, so it is the
    same on every machine). ``callback(epoch, model, history)`` runs after each epoch; it may write lists
    into ``history.extra``. ``first_epoch`` > 1 continues a resumed run (epochs first_epoch..epochs).
    ``mesh`` (see :mod:`course.parallel`) splits every batch across its devices. ``progress`` draws a progress
    bar (tqdm) on stderr when stderr is a terminal (never in a notebook, so stored outputs stay reproducible).
    ``train_eval=N`` also evaluates, after every epoch and in eval mode like the test split, a fixed random subset
    of N training examples (drawn once from ``seed``; all of them if N >= their number): the training accuracy to
    compare with the test accuracy (:class:`History`).
    """
    if hasattr(data, "epoch"):  # DeviceData, SyntheticData, course.folder_data.FolderData
        source, test = data, (getattr(data, "test", None) if test is None else test)
    elif isinstance(data, Dataset):
        source, test = None, ((data.x_test, data.y_test) if test is None else test)
        x, y = data.x_train, data.y_train
    else:
        source, (x, y) = None, data
    n = len(source) if source is not None else len(x)
    train_subset = None
    if train_eval is not None:
        if source is not None or train_eval < 1:
            raise ValueError("train_eval=N needs N >= 1 and the training data as host arrays (a Dataset or an "
                             "(x, y) pair), not a device source")
        pick = np.sort(np.random.default_rng(seed).permutation(n)[:train_eval])
        train_subset = (x[pick], y[pick])
    if n < batch_size:
        raise ValueError(f"batch_size={batch_size} is larger than the {n} training examples; "
                         f"use batch_size <= {n}")
    opt = optimizer if optimizer is not None else make_optimizer(model, lr, tx)
    if mesh is not None:
        from course.parallel import replicate

        replicate(mesh, model, opt)
    if source is None:
        source = DeviceData(x, y, mesh)  # on the device once; batches are gathered there
    elif source.mesh is not mesh:
        raise ValueError("the data source and fit were given different meshes; build the DeviceData or "
                         "SyntheticData with mesh=the mesh passed to fit")
    bar = tqdm(total=(epochs - first_epoch + 1) * (n // batch_size), unit="step", leave=False,
               disable=not (progress and sys.stderr.isatty()))
    hist = History()
    for epoch in range(first_epoch, epochs + 1):
        t0 = time.perf_counter()
        model.train()
        static, leaves = split_state(model, opt)  # train mode is part of graphdef: split after model.train()
        losses, accs = [], []
        for xb, yb in source.epoch(batch_size, seed + epoch):
            leaves, loss, acc = pure_train_step(static, leaves, xb, yb, loss_params, loss_fn)
            losses.append(loss)
            accs.append(acc)
            bar.update()
        merge_state((model, opt), static, leaves)
        bar.set_postfix_str(f"epoch {epoch}/{epochs}", refresh=False)
        hist.epoch.append(epoch)
        hist.train_loss.append(float(jnp.mean(jnp.stack(losses))))
        hist.train_accuracy.append(float(jnp.mean(jnp.stack(accs))))
        if test is not None:
            m = test(model) if callable(test) else evaluate(model, *test, mesh=mesh)
            hist.test_loss.append(m["loss"])
            hist.test_accuracy.append(m["accuracy"])
        if train_subset is not None:
            m = evaluate(model, *train_subset)
            hist.train_eval_loss.append(m["loss"])
            hist.train_eval_accuracy.append(m["accuracy"])
        hist.seconds.append(time.perf_counter() - t0)
        if callback is not None:
            callback(epoch, model, hist)
        if verbose:
            line = f"epoch {epoch:>{len(str(epochs))}}/{epochs}  train loss {hist.train_loss[-1]:.3f} " \
                   f"acc {hist.train_accuracy[-1]:.3f}"
            if test is not None:
                line += f"  |  test loss {hist.test_loss[-1]:.3f} acc {hist.test_accuracy[-1]:.3f}"
            print(line)
    bar.close()
    model.eval()
    return hist


# ----------------------------------------------------------------------------------------------------------
@nnx.jit(static_argnames=("loss_fn",))
def _grads(model, x, y, loss_fn, loss_params):
    return nnx.grad(lambda m: loss_fn(m, x, y, loss_params)[0])(model)


def layer_grad_norms(model: nnx.Module, x: np.ndarray, y: np.ndarray, loss_fn: LossFn = cross_entropy,
                     loss_params: Any = None, include: Sequence[str] = ("kernel",)) -> dict[str, float]:
    """L2 norm of the loss gradient with respect to each layer's weights, keyed by layer path, in
    ``nnx.iter_modules`` order (:func:`course.paths.module_order`).

    The model is put in train mode for the backward pass (as during training; dropout draws from its rngs) and
    left in eval mode.
    """
    model.train()
    grads = _grads(model, jnp.asarray(x), jnp.asarray(y), loss_fn, loss_params)
    model.eval()
    return {layer: float(jnp.linalg.norm(g)) for layer, g in paths.layer_arrays(model, grads, include).items()}
