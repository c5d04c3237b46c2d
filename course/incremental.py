"""Incremental (continual) learning: adding output classes to a trained network without forgetting (notebook 06).

A network trained on the *old* classes (say digits 0-4) later receives the *new* ones (5-9). Three pieces:

* :func:`expand_head` grows the classifier from N to N+k outputs, keeping the old weight columns exactly, so
  before any new training the grown model gives the old model's logits on the old classes.
* Strategies for training on the new data, behind one interface (:class:`Strategy`), each stating what it must
  keep from the past (:class:`Memory`):

  ========================  ============================================================  =====================
  strategy                  trains on / adds to the loss                                  keeps
  ========================  ============================================================  =====================
  :class:`Naive`            new data only, cross-entropy over all classes                 nothing
  :class:`Rehearsal`        new data + a fixed-size class-balanced exemplar memory        M old images
  :class:`LwF`              new data; + distillation of the old model's outputs, T = 2    a copy of the old model
  :class:`EWC`              new data; + lambda/2 sum_i F_i (theta_i - theta*_i)^2          Fisher + old weights
  :class:`Joint`            all data, from scratch (the upper bound, not incremental)     all old data
  ========================  ============================================================  =====================

  References: Rebuffi et al., "iCaRL", CVPR 2017, Sec. 2.2 (a fixed budget of exemplars, rebalanced as classes
  arrive); Li & Hoiem, "Learning without Forgetting", ECCV 2016 / TPAMI 2018, Sec. 3 eq. (2) (distillation with
  temperature T = 2 of the responses the old network gave on the new images); Kirkpatrick et al., "Overcoming
  catastrophic forgetting in neural networks", PNAS 2017, eq. (3) (elastic weight consolidation).
* Evaluation in the two scenarios of van de Ven & Tolias, "Three scenarios for continual learning" (2019):
  *class-incremental* (no task label at test time: argmax over every class seen so far) and *task-incremental*
  (the task label is given: argmax over that task's classes only), see :func:`accuracies`.

All strategies share ONE loss function, :func:`incremental_loss`, whose weights (distillation weight alpha,
temperature T, EWC strength lambda, old-class mask, Fisher, old weights) are *traced* ``loss_params``: the train
step of :func:`course.training.fit` compiles once for every strategy (compiling costs seconds on a CPU). A
strategy that does not use a term sets its weight to 0; the slots it does not use are not counted as its memory.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx

from course import integrity
from course.counting import param_count  # re-exported: the memory each strategy needs
from course.training import History, fit, padded_batches, predict

PureDict = dict  # nested {name: {name: array}}: nnx.to_pure_dict of a model's Param state
_MASKED = -1e9  # logit given to classes a softmax must ignore (finite: exp() is exactly 0, gradients stay finite)


# ----------------------------------------------------------------------------------------------------------
# Growing the classifier
def expand_head(model: nnx.Module, num_classes: int, *, rngs: nnx.Rngs, head: str = "head") -> nnx.Module:
    """A copy of ``model`` whose linear classifier ``model.<head>`` has ``num_classes`` outputs instead of N.

    The old kernel columns and biases are copied exactly into outputs 0..N-1; the k = num_classes - N new ones
    are freshly initialised (LeCun-normal kernel, zero bias, as ``nnx.Linear``). Every other weight is copied, so
    the grown model's logits on the old classes equal the old model's bit for bit. ``model`` is left unchanged.
    """
    old = getattr(model, head, None)
    if not isinstance(old, nnx.Linear):
        raise TypeError(f"expand_head needs the classifier as an nnx.Linear attribute model.{head}; "
                        f"{type(model).__name__}.{head} is {type(old).__name__}. Pass head='<attribute name>'.")
    n_in, n_old = old.kernel.shape
    if num_classes <= n_old:
        raise ValueError(f"the head already has {n_old} outputs; num_classes={num_classes} must be larger "
                         f"(it is the new total, old + new classes)")
    new_head = nnx.Linear(n_in, num_classes, use_bias=old.bias is not None, rngs=rngs)
    new_head.kernel[...] = new_head.kernel[...].at[:, :n_old].set(old.kernel[...])  # (n_in, num_classes)
    if old.bias is not None:
        new_head.bias[...] = new_head.bias[...].at[:n_old].set(old.bias[...])
    grown = nnx.clone(model)
    setattr(grown, head, new_head)
    return grown


def class_mask(classes: Sequence[int], num_classes: int) -> np.ndarray:
    """Boolean (num_classes,) vector, true at ``classes``."""
    m = np.zeros(num_classes, bool)
    m[list(classes)] = True
    return m


# ----------------------------------------------------------------------------------------------------------
# The loss terms, one function each, and the one loss every strategy trains with
def distillation_loss(student_logits: jax.Array, teacher_logits: jax.Array, mask: jax.Array,
                      T: jax.Array | float) -> jax.Array:
    """Mean over the batch of KL(p_T || q_T) on the classes where ``mask`` is true.

    p_T = softmax(teacher / T) and q_T = softmax(student / T), both restricted to the masked (old) classes.
    Li & Hoiem (2016) eq. (2) write the cross-entropy -sum p_T log q_T; the KL is that minus the entropy of
    p_T, which does not depend on the student: the same gradients, and 0 when the student matches the teacher.
    """
    s = jax.nn.log_softmax(jnp.where(mask, student_logits / T, _MASKED), axis=-1)  # (B, C), -1e9 off the mask
    t = jax.nn.log_softmax(jnp.where(mask, teacher_logits / T, _MASKED), axis=-1)
    kl = jnp.where(mask, jnp.exp(t) * (t - s), 0.0)  # (B, C)
    return kl.sum(-1).mean()


def ewc_penalty(params: PureDict, fisher: PureDict, anchor: PureDict) -> jax.Array:
    """sum_i F_i (theta_i - theta*_i)^2 over every weight (Kirkpatrick et al., 2017, eq. 3 without lambda/2)."""
    terms = jax.tree.map(lambda p, f, a: (f * (p - a) ** 2).sum(), params, fisher, anchor)
    return sum(jax.tree.leaves(terms), jnp.float32(0.0))


def teacher(model: nnx.Module, params: dict) -> nnx.Module:
    """The old model (LwF's teacher): ``model``'s architecture with the old weights ``params["anchor"]`` AND the
    old model's own non-trainable state ``params["stats"]`` (BatchNorm running statistics), in eval mode.

    Merging only the old weights into the *student's* other state would give the teacher the student's running
    statistics and, during training, its train-mode flags: a BatchNorm teacher would normalise with the batch's
    statistics, so its "recorded responses" would change with every batch. Li & Hoiem record the old network's
    outputs at test-time behaviour; so does this. ``model`` (the student) is left untouched."""
    graphdef, params_, stats, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
    params_ = jax.tree.map(lambda v: v, params_)  # fresh States: filling them leaves ``model`` untouched
    stats = jax.tree.map(lambda v: v, stats)
    nnx.replace_by_pure_dict(params_, params["anchor"])
    nnx.replace_by_pure_dict(stats, params["stats"])
    old = nnx.merge(graphdef, params_, stats, rest)
    old.eval()  # running statistics, no dropout: the old model as it answers at test time
    return old


def incremental_loss(model: nnx.Module, x: jax.Array, y: jax.Array, params: dict) -> tuple[jax.Array, jax.Array]:
    """The loss of every strategy: ``(loss, logits)`` with the signature of ``course.training.fit``'s loss_fn.

    loss = CE(logits, y)                                       (softmax over ALL classes in use, ``active``)
         + alpha * KL(softmax(old(x)/T) || softmax(logits/T)) on the old classes      (LwF, Li & Hoiem eq. 2)
         + lambda / 2 * sum_i F_i (theta_i - theta*_i)^2                   (EWC, Kirkpatrick et al. eq. 3)

    ``params`` (traced, see :func:`loss_params`): alpha, T, lam (scalars), old_mask (C,) bool, anchor (the old
    weights theta*, grown to C outputs, as a pure dict), stats (the old model's BatchNorm statistics) and fisher
    (F, same structure as anchor). The old model's outputs are recomputed by :func:`teacher` (eval mode, its own
    statistics) on each batch, so no per-image targets need storing; they are constants (``stop_gradient``),
    exactly Li & Hoiem's recorded responses Y_o. When alpha = 0 that forward pass is skipped (``lax.cond``).
    """
    logits = jnp.where(params["active"], model(x), _MASKED)  # (B, C); outputs not yet in use are masked out
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    old_logits = jax.lax.cond(params["alpha"] > 0,
                              lambda: jax.lax.stop_gradient(teacher(model, params)(x)),
                              lambda: jnp.zeros_like(logits))  # (B, C)
    kd = distillation_loss(logits, old_logits, params["old_mask"], params["T"])
    pen = ewc_penalty(nnx.to_pure_dict(nnx.state(model, nnx.Param)), params["fisher"], params["anchor"])
    return ce + params["alpha"] * kd + 0.5 * params["lam"] * pen, logits


def loss_params(anchor_model: nnx.Module, old_classes: Sequence[int], num_classes: int, *, alpha: float = 0.0,
                T: float = 2.0, lam: float = 0.0, fisher: PureDict | None = None,
                active: Sequence[int] | None = None) -> dict:
    """The traced ``params`` of :func:`incremental_loss`. ``anchor_model`` is the old model grown to
    ``num_classes`` outputs; ``fisher`` defaults to zeros (no EWC term); ``active`` the outputs in use (default
    all): the others are masked out of the softmax (pre-allocated outputs of classes not seen yet)."""
    anchor = nnx.to_pure_dict(nnx.state(anchor_model, nnx.Param))
    stats = nnx.to_pure_dict(nnx.state(anchor_model, nnx.BatchStat))  # {} for a model without BatchNorm
    if fisher is None:
        fisher = jax.tree.map(jnp.zeros_like, anchor)
    active = range(num_classes) if active is None else active
    return {"alpha": jnp.float32(alpha), "T": jnp.float32(T), "lam": jnp.float32(lam),
            "active": jnp.asarray(class_mask(active, num_classes)),
            "old_mask": jnp.asarray(class_mask(old_classes, num_classes)), "anchor": anchor, "stats": stats,
            "fisher": fisher}


# ----------------------------------------------------------------------------------------------------------
# The Fisher information of the old task (EWC)
@functools.partial(jax.jit, static_argnums=0)
def _fisher_batch(graphdef, params, rest, mask, xb, weight):
    """sum over the batch (rows weighted by ``weight``) of sum_y p(y|x) (d log p(y|x)/d theta)^2."""
    def log_probs(p, xi):  # (C,) log p(y | x) over the masked classes (-1e9 elsewhere)
        logits = nnx.merge(graphdef, p, rest)(xi[None])[0]
        return jax.nn.log_softmax(jnp.where(mask, logits, _MASKED))

    def one(xi):  # one image: the Jacobian of all C log-probabilities, squared, weighted by p(y|x)
        jac = jax.jacrev(log_probs)(params, xi)  # leaves (C, *param_shape)
        p = jnp.where(mask, jnp.exp(log_probs(params, xi)), 0.0)  # (C,)
        return jax.tree.map(lambda j: jnp.tensordot(p, j ** 2, axes=1), jac)

    per_image = jax.vmap(one)(xb)  # leaves (B, *param_shape)
    return jax.tree.map(lambda a: jnp.tensordot(weight, a, axes=1), per_image)


def fisher_diagonal(model: nnx.Module, x: np.ndarray, classes: Sequence[int], batch_size: int = 64) -> PureDict:
    """Diagonal of the Fisher information of ``model`` on inputs ``x``, the output restricted to ``classes``.

    F_i = mean_x sum_y p(y|x) (d log p(y|x) / d theta_i)^2, with p = softmax over ``classes`` only (the old
    task's output distribution) and the expectation over y taken exactly, not sampled (Kirkpatrick et al. 2017,
    Sec. "Methods": EWC's F is the Fisher of the old task's model). Pass the old model grown to the new head
    size: its old-class logits are the old model's, so F is the old model's Fisher, and the new head columns
    get F = 0 (they do not change any old-class output). Returns a pure dict shaped like the model's Params.
    """
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    n_out = model(jnp.asarray(x[:1])).shape[-1]
    mask = jnp.asarray(class_mask(classes, n_out))
    total = jax.tree.map(jnp.zeros_like, params)
    for xb, n in padded_batches(x, batch_size):  # one shape, one compile; padded rows get weight 0
        w = jnp.asarray(np.arange(batch_size) < n, jnp.float32)
        total = jax.tree.map(jnp.add, total, _fisher_batch(graphdef, params, rest, mask, jnp.asarray(xb), w))
    return nnx.to_pure_dict(jax.tree.map(lambda t: t / len(x), total))


# ----------------------------------------------------------------------------------------------------------
# The exemplar memory (rehearsal)
class ExemplarMemory:
    """A fixed budget of ``size`` stored training images, shared equally by every class seen so far.

    When new classes arrive, each old class gives up exemplars (it keeps the first ones it chose, iCaRL's
    "ReduceExemplarSet", Rebuffi et al. 2017, Alg. 5) so that the memory never exceeds ``size`` and every class
    keeps size // n_classes exemplars (the first size % n_classes classes one more). New classes' exemplars
    are drawn at random (iCaRL picks them by herding; random selection is the common simple baseline).
    """

    def __init__(self, size: int, seed: int = 0):
        if size < 1:
            raise ValueError(f"memory size must be at least 1, got {size}")
        self.size = size
        self._rng = np.random.default_rng(seed)
        self._store: dict[int, np.ndarray] = {}  # class -> (n_c, H, W, C) images, in the order chosen

    @property
    def classes(self) -> list[int]:
        return sorted(self._store)

    def quota(self, n_classes: int) -> list[int]:
        """How many exemplars each of ``n_classes`` classes may keep (they sum to ``size``)."""
        return [self.size // n_classes + (i < self.size % n_classes) for i in range(n_classes)]

    def add(self, x: np.ndarray, y: np.ndarray) -> "ExemplarMemory":
        """Store exemplars of the classes in ``y`` that the memory has not seen, shrinking the others."""
        new = [int(c) for c in np.unique(y) if int(c) not in self._store]
        classes = sorted([*self._store, *new])
        if len(classes) > self.size:
            raise ValueError(f"a memory of {self.size} exemplars cannot keep one of each of {len(classes)} classes;"
                             f" use size >= {len(classes)}")
        for c, q in zip(classes, self.quota(len(classes))):
            if c in self._store:
                self._store[c] = self._store[c][:q]
            else:
                idx = np.flatnonzero(y == c)
                self._store[c] = x[self._rng.choice(idx, size=min(q, len(idx)), replace=False)]
        return self

    @property
    def x(self) -> np.ndarray:
        return np.concatenate([self._store[c] for c in self.classes])  # (n, H, W, C)

    @property
    def y(self) -> np.ndarray:
        return np.concatenate([np.full(len(self._store[c]), c, np.int32) for c in self.classes])

    def counts(self) -> dict[int, int]:
        return {c: len(self._store[c]) for c in self.classes}

    def __len__(self) -> int:
        return sum(self.counts().values())

    @property
    def nbytes(self) -> int:
        """Bytes of the stored images and their int32 labels."""
        return sum(v.nbytes for v in self._store.values()) + 4 * len(self)

    def __repr__(self) -> str:
        return f"ExemplarMemory(size={self.size}, stored={len(self)}, per class={self.counts()})"


# ----------------------------------------------------------------------------------------------------------
# Strategies
@dataclasses.dataclass(frozen=True)
class Memory:
    """What a strategy keeps from the old task, and its size in bytes (float32 weights, stored images)."""

    what: str
    nbytes: int


@dataclasses.dataclass
class Increment:
    """Everything a strategy may use when the new classes arrive.

    ``old_model`` was trained on ``old_classes`` (its head has len(old_classes) outputs); ``new`` is the new
    classes' training data (x, y) with labels in the grown label space; ``old`` the old training data: only
    :class:`Rehearsal` (a few exemplars), :class:`EWC` (to compute the Fisher before the old data is gone) and
    :class:`Joint` read it. ``build(num_classes)`` makes a fresh model (for :class:`Joint`).

    In a sequence of tasks (:func:`run_sequence`) ``old`` is the task just learned, ``memory`` the exemplar
    memory kept so far (rehearsal then reads it instead of ``old``) and ``fisher_prior`` the Fisher accumulated
    over the earlier tasks (online EWC, Schwarz et al. 2018: the penalties of all past tasks in one quadratic).
    """

    old_model: nnx.Module
    old_classes: Sequence[int]
    new_classes: Sequence[int]
    new: tuple[np.ndarray, np.ndarray]
    old: tuple[np.ndarray, np.ndarray]
    build: Callable[[int], nnx.Module] | None = None
    seed: int = 0
    fisher_samples: int | None = None
    memory: "ExemplarMemory | None" = None
    fisher_prior: PureDict | None = dataclasses.field(default=None, repr=False)
    _fisher: PureDict | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self):
        n_old, n_new = len(self.old_classes), len(self.new_classes)
        if list(self.old_classes) != list(range(n_old)) or list(self.new_classes) != list(range(n_old, n_old + n_new)):
            raise ValueError(f"the grown head puts the old classes at outputs 0..{n_old - 1} and the new ones after "
                             f"them; got old_classes={list(self.old_classes)}, new_classes={list(self.new_classes)}. "
                             f"Relabel the data (Dataset.subset(..., relabel=True) does it per task)")
        for name, (_, y), classes in (("new", self.new, self.new_classes), ("old", self.old, self.old_classes)):
            stray = sorted(set(np.unique(y).tolist()) - set(int(c) for c in classes))
            if stray:
                hint = (f" Labels of new-only data must be indices in the GROWN label space (old classes 0..{n_old - 1},"
                        f" new ones {n_old}..{n_old + n_new - 1}): a file that labels its own classes 0..{n_new - 1}"
                        f" would retrain the old outputs 0..{n_new - 1}. Map them with grown_labels(y, {n_old})."
                        if name == "new" else "")
                raise ValueError(f"the {name} data has labels {stray} outside its classes "
                                 f"{list(classes)}.{hint}")
        n_out = self.outputs
        if n_out != n_old and n_out < n_old + n_new:
            raise ValueError(f"old_model has {n_out} outputs but old_classes lists {n_old} classes; pass the model "
                             f"trained on exactly the old classes, or one with all {n_old + n_new} outputs allocated")

    @property
    def num_classes(self) -> int:
        return len(self.old_classes) + len(self.new_classes)

    @property
    def outputs(self) -> int:
        """Outputs of the old model's head (len(old_classes), or more when outputs are pre-allocated)."""
        head = getattr(self.old_model, "head", None)
        return head.kernel.shape[-1] if isinstance(head, nnx.Linear) else len(self.old_classes)

    @property
    def head_size(self) -> int:
        """Outputs of the model the strategies train: num_classes, or the pre-allocated head if larger."""
        return max(self.num_classes, self.outputs)

    def grown(self) -> nnx.Module:
        """The old model with its head grown to ``num_classes`` (new columns seeded by ``seed``); a copy of it
        when its head already has the outputs (pre-allocated: those of unseen classes were masked out, so they
        still hold their random initialisation, as freshly grown ones would)."""
        if self.outputs >= self.num_classes:
            return nnx.clone(self.old_model)
        return expand_head(self.old_model, self.num_classes, rngs=nnx.Rngs(self.seed + 1))

    def fisher(self) -> PureDict:
        """The old task's diagonal Fisher (:func:`fisher_diagonal`) on the old training images, or on a random
        ``fisher_samples`` of them (an estimate of the same expectation, cheaper), plus ``fisher_prior`` (zero
        for the new outputs). Computed once and cached: EWC runs with different lambdas share it."""
        if self._fisher is None:
            x = self.old[0]
            if self.fisher_samples is not None and self.fisher_samples < len(x):
                x = x[np.random.default_rng(self.seed).choice(len(x), self.fisher_samples, replace=False)]
            f = fisher_diagonal(self.grown(), x, self.old_classes)
            if self.fisher_prior is not None:
                f = jax.tree.map(lambda a, p: a + _pad_to(p, a.shape), f, self.fisher_prior)
            self._fisher = f
        return self._fisher


def _pad_to(a: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """``a`` zero-padded at the end of each axis to ``shape`` (a smaller head's Fisher, grown with the head)."""
    if any(n < m for n, m in zip(shape, a.shape)):
        raise ValueError(f"cannot grow an array of shape {a.shape} to {shape}")
    return jnp.pad(jnp.asarray(a), [(0, n - m) for n, m in zip(shape, a.shape)])


def grown_labels(y_local: np.ndarray, n_old: int) -> np.ndarray:
    """Labels 0..k-1 of a new-only dataset (its own label space) as indices in the grown head: n_old..n_old+k-1."""
    y_local = np.asarray(y_local)
    if y_local.size and y_local.min() < 0:
        raise ValueError(f"labels must be non-negative class indices, got {int(y_local.min())}")
    return (y_local + n_old).astype(np.int32)


@dataclasses.dataclass
class Plan:
    """What :meth:`Strategy.prepare` returns: the model to train, its training data and loss params."""

    model: nnx.Module
    x: np.ndarray
    y: np.ndarray
    params: dict
    memory: Memory


class Strategy:
    """A way of learning the new classes. ``loss`` is :func:`incremental_loss` for all (so the train step
    compiles once); :meth:`prepare` chooses the starting model, the training data and the loss weights."""

    name = "strategy"
    loss = staticmethod(incremental_loss)

    def prepare(self, inc: Increment) -> Plan:
        raise NotImplementedError

    def _plan(self, inc: Increment, x, y, memory: Memory, model: nnx.Module | None = None, **weights) -> Plan:
        grown = inc.grown()
        params = loss_params(grown, inc.old_classes, inc.head_size, active=range(inc.num_classes), **weights)
        return Plan(grown if model is None else model, x, y, params, memory)


class Naive(Strategy):
    """Fine-tune the grown model on the new data only (cross-entropy over all classes). Keeps nothing."""

    name = "naive"

    def prepare(self, inc: Increment) -> Plan:
        return self._plan(inc, *inc.new, Memory("nothing", 0))


class Rehearsal(Strategy):
    """Fine-tune on the new data plus an :class:`ExemplarMemory` of ``size`` old images (class-balanced).

    ``repeat`` > 1 shows each exemplar that many times per epoch (the memory is small next to the new data; a
    replayed batch of van de Ven et al. 2020 plays the same role)."""

    name = "rehearsal"

    def __init__(self, size: int = 100, repeat: int = 1):
        self.size, self.repeat = size, repeat
        self.name = f"rehearsal ({size})"

    def prepare(self, inc: Increment) -> Plan:
        if inc.memory is not None:
            if inc.memory.size != self.size:
                raise ValueError(f"the increment's memory holds {inc.memory.size} exemplars, this strategy {self.size}")
            mem = inc.memory
        else:
            mem = ExemplarMemory(self.size, seed=inc.seed).add(*inc.old)
        x = np.concatenate([inc.new[0], *[mem.x] * self.repeat])
        y = np.concatenate([inc.new[1], *[mem.y] * self.repeat])
        per = mem.x[0].nbytes + 4
        return self._plan(inc, x, y, Memory(f"{len(mem)} exemplars x {per:,} B", mem.nbytes))


class LwF(Strategy):
    """Learning without Forgetting (Li & Hoiem 2016): cross-entropy on the new data + ``alpha`` x distillation
    of the old model's old-class outputs at temperature ``T``. Keeps a copy of the old model (its weights)."""

    name = "LwF"

    def __init__(self, alpha: float = 1.0, T: float = 2.0):
        self.alpha, self.T = alpha, T

    def prepare(self, inc: Increment) -> Plan:
        n = param_count(inc.old_model)
        return self._plan(inc, *inc.new, Memory(f"old model: {n:,} weights x 4 B", 4 * n), alpha=self.alpha, T=self.T)


class EWC(Strategy):
    """Elastic weight consolidation (Kirkpatrick et al. 2017): cross-entropy on the new data
    + lambda/2 sum_i F_i (theta_i - theta*_i)^2, F the diagonal Fisher of the old task (computed on the old data
    before it is discarded), theta* the old weights. Keeps F and theta*: two copies of the weights."""

    name = "EWC"

    def __init__(self, lam: float = 1000.0):
        self.lam = lam

    def prepare(self, inc: Increment) -> Plan:
        n = param_count(inc.old_model)
        mem = Memory(f"Fisher + old weights: 2 x {n:,} x 4 B", 8 * n)
        return self._plan(inc, *inc.new, mem, lam=self.lam, fisher=inc.fisher())


class Joint(Strategy):
    """Not incremental: a fresh model trained on all the data (old + new); the upper bound. Keeps all old data."""

    name = "joint (all data)"

    def prepare(self, inc: Increment) -> Plan:
        if inc.build is None:
            raise ValueError("Joint training needs Increment.build(num_classes) to make a fresh model")
        x = np.concatenate([inc.old[0], inc.new[0]])
        y = np.concatenate([inc.old[1], inc.new[1]])
        mem = Memory(f"all {len(inc.old[0]):,} old images", inc.old[0].nbytes + 4 * len(inc.old[0]))
        return self._plan(inc, x, y, mem, model=inc.build(inc.head_size))


# ----------------------------------------------------------------------------------------------------------
# Evaluation: class-incremental and task-incremental accuracy
def task_il_logits(logits: np.ndarray, y: np.ndarray, tasks: Sequence[Sequence[int]]) -> np.ndarray:
    """Logits with every class outside the task of each example's true label set to -inf (the task label is
    given at test time, so the prediction is an argmax within that task's classes)."""
    logits = np.asarray(logits)
    allowed = np.zeros(logits.shape, bool)  # (N, C)
    for task in tasks:
        rows = np.isin(y, task)
        allowed[np.ix_(rows, list(task))] = True
    if not allowed.any(-1).all():
        missing = sorted(set(np.asarray(y)[~allowed.any(-1)].tolist()))
        raise ValueError(f"labels {missing} belong to no task in {tasks}")
    return np.where(allowed, logits, -np.inf)


def accuracies(logits: np.ndarray, y: np.ndarray, tasks: Sequence[Sequence[int]]) -> dict[str, dict[str, float]]:
    """Accuracy on the old classes (every task but the last), the new (last task) and all, in both scenarios:
    ``{"class-IL": {"old", "new", "all"}, "task-IL": {...}}``."""
    y = np.asarray(y)
    old = np.isin(y, [c for t in tasks[:-1] for c in t])
    out = {}
    for scenario, lg in (("class-IL", logits), ("task-IL", task_il_logits(logits, y, tasks))):
        hit = np.asarray(lg).argmax(-1) == y
        out[scenario] = {"old": float(hit[old].mean()), "new": float(hit[~old].mean()), "all": float(hit.mean())}
    return out


def per_class_accuracy(logits: np.ndarray, y: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes,) class-IL accuracy of each class (NaN for a class absent from ``y``)."""
    hit = np.asarray(logits).argmax(-1) == y
    return np.array([hit[y == c].mean() if (y == c).any() else np.nan for c in range(num_classes)])


@dataclasses.dataclass
class Result:
    """One strategy's outcome: accuracies (see :func:`accuracies`), its memory, history and the trained model."""

    name: str
    acc: dict[str, dict[str, float]]
    memory: Memory
    history: History
    model: nnx.Module
    seconds: float


def run(strategy: Strategy, inc: Increment, test: tuple[np.ndarray, np.ndarray], *, epochs: int,
        batch_size: int = 64, lr: float = 1e-3, tx: optax.GradientTransformation | None = None,
        verbose: bool = False) -> Result:
    """Prepare ``strategy`` on ``inc``, train with :func:`course.training.fit` and evaluate on ``test``
    (labels of all classes) in both scenarios. Pass the same ``tx`` object to every run to reuse the compiled
    train step."""
    t0 = time.perf_counter()
    plan = strategy.prepare(inc)
    hist = fit(plan.model, (plan.x, plan.y), epochs=epochs, batch_size=batch_size, lr=lr, tx=tx, seed=inc.seed,
               loss_fn=strategy.loss, loss_params=plan.params, verbose=verbose)
    tasks = [list(inc.old_classes), list(inc.new_classes)]
    acc = accuracies(predict(plan.model, test[0]), test[1], tasks)
    return Result(strategy.name, acc, plan.memory, hist, plan.model, time.perf_counter() - t0)


def format_results(results: Sequence[Result]) -> str:
    """A fixed-width table: one row per strategy, old/new/all accuracy in both scenarios, and memory."""
    head = (f"{'strategy':<20} {'class-IL: old':>13} {'new':>6} {'all':>6}   {'task-IL: old':>12} {'new':>6} "
            f"{'all':>6}   {'memory':>10}  what it keeps")
    lines = [head, "-" * len(head)]
    for r in results:
        c, t = r.acc["class-IL"], r.acc["task-IL"]
        lines.append(f"{r.name:<20} {c['old']:>13.3f} {c['new']:>6.3f} {c['all']:>6.3f}   {t['old']:>12.3f} "
                     f"{t['new']:>6.3f} {t['all']:>6.3f}   {r.memory.nbytes / 1024:>7.1f} KiB  {r.memory.what}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# Between increments: the weights on disk, with the label space they answer in
_SAVED = nnx.Any(nnx.Param, nnx.BatchStat)  # what a reloaded model needs: weights and BatchNorm statistics
_MANIFEST = "sha256.json"  # {file: sha256} of the weights and classes.json (course.integrity), written last


def save_weights(directory: str | Path, model: nnx.Module, classes: Sequence[str]) -> Path:
    """Write ``model``'s weights and BatchNorm statistics (Orbax, as :mod:`course.checkpoint`) to ``directory``,
    and beside them ``classes.json``: the label space, output i = ``classes[i]`` (and the number of outputs,
    more than the classes when outputs are pre-allocated for classes to come). A later increment reloads both
    (:func:`load_weights`): the class list is what new data's labels must be mapped into. Last comes
    ``sha256.json``, the sha256 of every file written, which :func:`load_weights` checks before reading any."""
    directory = Path(directory).resolve()
    n_out = model.head.kernel.shape[-1]
    if len(classes) > n_out:
        raise ValueError(f"the model has {n_out} outputs but {len(classes)} class names were given")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / _MANIFEST).unlink(missing_ok=True)  # a save cut short leaves no manifest vouching for it
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(directory / "weights", nnx.to_pure_dict(nnx.state(model, _SAVED)), force=True)
    integrity.write_json(directory / "classes.json", {"classes": list(classes), "outputs": n_out})
    written = [f.relative_to(directory) for f in (directory / "weights").rglob("*")] + ["classes.json"]
    integrity.write_manifest(directory / _MANIFEST, directory, written)
    return directory


def saved_classes(directory: str | Path) -> list[str]:
    """The label space saved with the weights in ``directory`` (checked against its sha256 first)."""
    return _label_file(directory)["classes"]


def _label_file(directory: str | Path) -> dict:
    """Verify every file :func:`save_weights` wrote in ``directory`` (an :class:`~course.integrity.IntegrityError`
    names a missing or damaged one) and return its ``classes.json``."""
    directory = Path(directory)
    fix = f"save the model again with save_weights (a directory it wrote holds weights/, classes.json, {_MANIFEST})"
    if not directory.is_dir():
        raise integrity.IntegrityError(f"{directory} does not exist; {fix}", directory, "missing")
    integrity.verify(directory / _MANIFEST, directory, fix)
    return integrity.read_json(directory / "classes.json", fix)


def load_weights(directory: str | Path, build: Callable[[int], nnx.Module]) -> tuple[nnx.Module, list[str]]:
    """``(model, classes)``: a model from ``build(outputs)`` with the weights saved in ``directory``, after checking
    every saved file against its sha256 (a damaged one is an :class:`~course.integrity.IntegrityError` naming it)."""
    directory = Path(directory).resolve()
    labels = _label_file(directory)
    classes = labels["classes"]
    model = build(labels["outputs"])
    state = nnx.state(model, _SAVED)
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, nnx.to_pure_dict(state))
    with ocp.StandardCheckpointer() as ckpt:
        restored = ckpt.restore(directory / "weights", target)
    nnx.replace_by_pure_dict(state, restored)
    nnx.update(model, state)
    return model, classes


# ----------------------------------------------------------------------------------------------------------
# A sequence of tasks: the accuracy matrix
@dataclasses.dataclass
class SequenceResult:
    """A strategy over a sequence of T tasks. ``acc[t, j]``: class-IL test accuracy on task j's classes after
    learning task t (argmax over every class seen so far; NaN for j > t); ``task_acc`` the same, task-IL."""

    name: str
    acc: np.ndarray       # (T, T)
    task_acc: np.ndarray  # (T, T)

    @property
    def average(self) -> float:
        """Mean accuracy over the T tasks after the last one (class-IL)."""
        return float(np.mean(self.acc[-1]))

    @property
    def task_average(self) -> float:
        return float(np.mean(self.task_acc[-1]))

    @property
    def forgetting(self) -> float:
        """Mean over tasks 1..T-1 of (best accuracy on task j before the last task) - (accuracy after it),
        Chaudhry et al., "Riemannian walk for incremental learning", ECCV 2018, eq. (8)."""
        a = self.acc
        return float(np.mean([np.nanmax(a[j:-1, j]) - a[-1, j] for j in range(len(a) - 1)]))


def task_matrix_row(logits: np.ndarray, y: np.ndarray, tasks: Sequence[Sequence[int]], n_tasks: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Class-IL and task-IL accuracy on each of ``tasks`` (those learned so far), padded with NaN to n_tasks."""
    row, trow = np.full(n_tasks, np.nan), np.full(n_tasks, np.nan)
    hit = np.asarray(logits).argmax(-1) == y
    thit = task_il_logits(logits, y, tasks).argmax(-1) == y
    for j, task in enumerate(tasks):
        rows = np.isin(y, task)
        row[j], trow[j] = hit[rows].mean(), thit[rows].mean()
    return row, trow


def run_sequence(strategy: Strategy, tasks: Sequence[Sequence[int]], train: tuple[np.ndarray, np.ndarray],
                 test: tuple[np.ndarray, np.ndarray], first: str | Path, build: Callable[[int], nnx.Module],
                 workdir: str | Path, *, epochs: int, seed: int = 0, tx: optax.GradientTransformation | None = None,
                 lr: float = 1e-3, batch_size: int = 64, fisher_samples: int | None = None) -> SequenceResult:
    """Learn ``tasks[1:]`` one after the other with ``strategy``, starting from the model of ``tasks[0]`` saved
    in ``first`` (:func:`save_weights`). Every increment reloads the previous model from disk, grows its head
    by the new task's classes, trains, evaluates on the test images of every task seen so far and saves the
    result to ``workdir/task<t>``. Labels must already be indices in the grown label space (the tasks'
    classes in order: ``tasks`` = [[0, 1], [2, 3], ...]). A model saved with more outputs than classes
    (pre-allocated, ``build`` ignoring its argument) is not grown: the outputs of classes not yet seen are masked
    out of the loss and of the evaluation, which trains exactly as a grown head would and compiles one train step
    for the whole sequence instead of one per head size.

    What each strategy carries from one increment to the next, and nothing else: rehearsal its exemplar
    memory (``size`` images shared by all classes seen, iCaRL's rule), EWC the Fisher summed over the tasks
    (online EWC) with the latest weights as anchor, LwF the latest model as teacher of all old outputs."""
    order = [c for task in tasks for c in task]
    if order != list(range(len(order))):
        raise ValueError(f"tasks must list the classes 0..{len(order) - 1} in order, got {list(map(list, tasks))}; "
                         f"relabel the data so that task t's classes follow task t-1's")
    x, y = train
    xt, yt = test
    T = len(tasks)
    acc, task_acc = np.full((T, T), np.nan), np.full((T, T), np.nan)
    model, classes = load_weights(first, build)
    seen = np.isin(yt, tasks[0])
    acc[0], task_acc[0] = task_matrix_row(predict(model, xt[seen])[:, :len(classes)], yt[seen], tasks[:1], T)
    sel = lambda task: np.isin(y, task)  # noqa: E731
    memory = ExemplarMemory(strategy.size, seed=seed).add(x[sel(tasks[0])], y[sel(tasks[0])]) \
        if isinstance(strategy, Rehearsal) else None
    fisher, previous = None, Path(first)
    for t in range(1, T):
        model, classes = load_weights(previous, build)  # the new data arrive: start from the saved model
        old_classes = list(range(len(classes)))
        inc = Increment(model, old_classes, list(tasks[t]), new=(x[sel(tasks[t])], y[sel(tasks[t])]),
                        old=(x[sel(tasks[t - 1])], y[sel(tasks[t - 1])]), build=build, seed=seed * 100 + t,
                        fisher_samples=fisher_samples, memory=memory, fisher_prior=fisher)
        plan = strategy.prepare(inc)
        fit(plan.model, (plan.x, plan.y), epochs=epochs, batch_size=batch_size, lr=lr, tx=tx, seed=seed * 100 + t,
            loss_fn=strategy.loss, loss_params=plan.params, verbose=False)
        seen = np.isin(yt, order[:inc.num_classes])
        logits = predict(plan.model, xt[seen])[:, :inc.num_classes]  # the classes seen so far
        acc[t], task_acc[t] = task_matrix_row(logits, yt[seen], tasks[:t + 1], T)
        if isinstance(strategy, EWC):
            fisher = inc.fisher()
        if memory is not None:
            memory.add(*inc.new)
        previous = save_weights(Path(workdir) / f"task{t}", plan.model, [*classes, *map(str, tasks[t])])
    return SequenceResult(strategy.name, acc, task_acc)


# ----------------------------------------------------------------------------------------------------------
# Transfer learning's tool: a smaller learning rate for the old layers (notebook 05)
__all__ = ["expand_head", "param_count", "class_mask", "distillation_loss", "ewc_penalty", "incremental_loss",
           "loss_params", "fisher_diagonal", "ExemplarMemory", "Memory", "Increment", "Plan", "Strategy", "Naive",
           "Rehearsal", "LwF", "EWC", "Joint", "task_il_logits", "accuracies", "per_class_accuracy", "Result",
           "run", "format_results", "teacher", "grown_labels", "save_weights", "load_weights",
           "saved_classes", "SequenceResult", "task_matrix_row", "run_sequence"]
