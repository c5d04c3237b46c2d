"""Reusing a trained network for new classes (notebook 05): a linear probe on bottleneck features, fine-tuning
with a smaller learning rate for the pretrained layers, and the from-scratch baseline, plus the notebook's diagram.

* Linear probe (:class:`LinearProbe`): freeze everything, train only a new last layer on the features
  (Yosinski et al., "How transferable are features in deep neural networks?", NIPS 2014, Sec. 4; the frozen
  "off-the-shelf" features of Razavian et al., CVPR Workshops 2014). With cached features
  (:mod:`course.features`) each epoch is a few matrix products; :class:`FrozenFeatures` is the same model
  recomputing the features every epoch.
* Fine-tuning: start from the pretrained weights with a fresh head and train everything, the pretrained part
  with a smaller learning rate so the new head's large early gradients do not wreck features that already work
  (Yosinski et al. Sec. 4.1 "fine-tuned"; Howard & Ruder, "ULMFiT", ACL 2018, Sec. 3.2 "discriminative
  fine-tuning"). :func:`finetune_tx` builds the two-learning-rate optimizer with ``optax.multi_transform``,
  labelling every parameter by its path in the NNX state (:func:`param_labels`); learning rate 0 freezes a part.
  Training from scratch is the same optimizer with equal rates on a freshly initialised network.
* A *converged* probe (:func:`converged_probe`): the same standardise-then-linear model fitted to convergence by
  L-BFGS (scikit-learn's multinomial logistic regression, L2 penalty ``C``). A probe trained for a few epochs of
  Adam is still improving, and comparing an unfinished probe with fine-tuning compares budgets, not features.
* How many directions the features use (:func:`participation_ratio`, :func:`dead_units`): Yosinski et al.'s
  "specificity" made measurable. The participation ratio of the eigenvalues of the features' correlation matrix
  is ``(sum l)^2 / sum l^2``: 1 when one direction holds all the variance, D when D directions share it equally
  (Gao et al., "A theory of multineuronal dimensionality...", 2017). Correlation, not covariance, because the
  probe standardises every feature first.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np
import optax
from flax import nnx

from course import counting, paths


# ----------------------------------------------------------------------------------------------------------
# Heads and models
def linear_head(in_features: int, num_classes: int, seed: int = 0) -> nnx.Linear:
    """A fresh last layer: ``nnx.Linear`` (LeCun-normal kernel, zero bias) from ``seed``."""
    return nnx.Linear(in_features, num_classes, rngs=nnx.Rngs(seed))


class LinearProbe(nnx.Module):
    """The new last layer: ``BatchNorm`` without scale or shift, then ``Linear``.

    Frozen features can sit on scales that make plain gradient descent crawl (ReLU features pooled over
    positions are all positive, share a large common offset and differ by small spreads; an untrained
    network's are tiny). Standardising them first is the usual linear-probe protocol (He et al., "Masked
    Autoencoders Are Scalable Vision Learners", CVPR 2022, Appendix A.1, "Linear probing": "an extra BatchNorm
    layer without affine transformation"). The
    normalisation has no trainable parameters: the probe trains exactly ``in_features * num_classes +
    num_classes`` numbers. ``momentum=0.9`` lets the running statistics settle within a few dozen steps.
    """

    def __init__(self, in_features: int, num_classes: int, seed: int = 0, momentum: float = 0.9):
        rngs = nnx.Rngs(seed)
        self.norm = nnx.BatchNorm(in_features, use_bias=False, use_scale=False, momentum=momentum, rngs=rngs)
        self.linear = nnx.Linear(in_features, num_classes, rngs=rngs)

    @property
    def in_features(self) -> int:
        return self.linear.in_features

    def __call__(self, f: jax.Array) -> jax.Array:  # (B, in_features) -> (B, num_classes)
        return self.linear(self.norm(f))


def with_new_head(model: nnx.Module, num_classes: int, seed: int = 0, head: str = "head",
                  probe: bool = True) -> nnx.Module:
    """A copy of ``model`` whose last layer ``model.<head>`` is replaced by a fresh :class:`LinearProbe` (or, with
    ``probe=False``, a plain :func:`linear_head`) with ``num_classes`` outputs; every other weight is copied
    (``model`` is left unchanged)."""
    new = nnx.clone(model)
    old = getattr(new, head)
    make = LinearProbe if probe else linear_head
    setattr(new, head, make(old.in_features, num_classes, seed))
    return new


class FrozenFeatures(nnx.Module):
    """``probe(stop_gradient(extractor's layer))``: the linear probe that recomputes its input features on
    every call. Train it with :func:`probe_optimizer` so that only ``probe`` is updated."""

    def __init__(self, extractor: nnx.Module, probe: nnx.Module, layer: str = "gap"):
        self.extractor, self.probe, self.layer = extractor, probe, layer

    def __call__(self, x: jax.Array) -> jax.Array:
        feats = jax.lax.stop_gradient(self.extractor.intermediates(x)[1][self.layer])  # (B, D)
        return self.probe(feats)  # (B, num_classes)


def probe_optimizer(model: FrozenFeatures, lr: float = 1e-2) -> nnx.Optimizer:
    """Adam over ``model.probe``'s parameters only (the filter selects paths that start with "probe")."""
    return nnx.Optimizer(model, optax.adam(lr), wrt=nnx.All(nnx.Param, lambda path, _: path[:1] == ("probe",)))


# ----------------------------------------------------------------------------------------------------------
# Per-parameter learning rates
def param_labels(params: Any, head: str = "head") -> Any:
    """A pytree like ``params`` (an NNX state of Params, or its pure arrays) with "head" on the leaves under the
    top-level attribute ``head`` and "pretrained" everywhere else: optax.multi_transform's ``param_labels``."""
    return paths.labels(params, lambda name: "head" if name.split("/")[0] == head else "pretrained")


def finetune_tx(lr_head: float = 1e-2, lr_pretrained: float = 1e-3, head: str = "head",
                make=optax.adam) -> optax.GradientTransformation:
    """``make(lr_head)`` for the new head and ``make(lr_pretrained)`` for every pretrained parameter, routed by
    :func:`param_labels` through ``optax.multi_transform``.

    The learning rates are injected hyperparameters (``optax.inject_hyperparams``): they live in the optimizer
    state, so one ``tx`` serves every run and :func:`set_learning_rates` changes them without recompiling the
    jitted train step (compiling costs seconds on a CPU). A learning rate of 0 freezes that part exactly.
    """
    inject = optax.inject_hyperparams(make)
    transforms = {"head": inject(learning_rate=lr_head), "pretrained": inject(learning_rate=lr_pretrained)}
    return optax.multi_transform(transforms, lambda params: param_labels(params, head))


def set_learning_rates(optimizer: nnx.Optimizer, head: float, pretrained: float) -> nnx.Optimizer:
    """Set the two learning rates of an ``nnx.Optimizer`` built on :func:`finetune_tx`; returns it."""
    for label, lr in (("head", head), ("pretrained", pretrained)):
        optimizer.opt_state.inner_states[label].inner_state.hyperparams["learning_rate"][...] = lr
    return optimizer


def two_rate_optimizer(model: nnx.Module, tx: optax.GradientTransformation, head: float,
                       pretrained: float) -> nnx.Optimizer:
    """``nnx.Optimizer(model, tx)`` over all Params, with ``tx`` from :func:`finetune_tx` and these rates."""
    return set_learning_rates(nnx.Optimizer(model, tx, wrt=nnx.Param), head, pretrained)


def converged_probe(f_train: np.ndarray, y_train: np.ndarray, f_test: np.ndarray, y_test: np.ndarray,
                    C: float = 1.0) -> float:
    """Test accuracy of a linear probe run to convergence: features standardised with the training features'
    mean and sd (what :class:`LinearProbe`'s BatchNorm does), then multinomial logistic regression fitted by
    L-BFGS (scikit-learn, L2 penalty ``C``, at most 5,000 iterations). Deterministic: no random state."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if len(f_train) != len(y_train) or len(f_test) != len(y_test):
        raise ValueError(f"features and labels differ in length: train {len(f_train)} vs {len(y_train)}, "
                         f"test {len(f_test)} vs {len(y_test)}")
    scaler = StandardScaler().fit(f_train)
    clf = LogisticRegression(C=C, max_iter=5000).fit(scaler.transform(f_train), y_train)
    return float(clf.score(scaler.transform(f_test), y_test))


def dead_units(f: np.ndarray, tol: float = 1e-6) -> int:
    """How many of the D features of ``f`` (N, D) are constant over the N images (sd <= ``tol``): ReLU units that
    never fire on these images carry nothing for a probe."""
    return int((np.asarray(f).std(axis=0) <= tol).sum())


def correlation_spectrum(f: np.ndarray, tol: float = 1e-6) -> np.ndarray:
    """Eigenvalues, largest first, of the correlation matrix of the live (non-constant) features of ``f`` (N, D):
    the variance of the standardised features along each principal direction (they sum to the live count)."""
    f = np.asarray(f, np.float64)
    live = f.std(axis=0) > tol
    if live.sum() < 2:
        raise ValueError(f"only {int(live.sum())} of {f.shape[1]} features vary over these images; "
                         "a spectrum needs at least 2")
    return np.linalg.eigvalsh(np.corrcoef(f[:, live].T))[::-1].clip(min=0)


def participation_ratio(f: np.ndarray) -> float:
    """``(sum l)^2 / sum l^2`` over :func:`correlation_spectrum`: the effective number of directions the
    standardised features of ``f`` (N, D) spread over, between 1 and the number of live features."""
    ev = correlation_spectrum(f)
    return float(ev.sum() ** 2 / (ev ** 2).sum())


def restandardised(probe: LinearProbe, f: np.ndarray) -> LinearProbe:
    """A copy of ``probe`` whose BatchNorm statistics are re-estimated on the (unlabelled) features ``f`` (N, D):
    mean and variance replaced, the trained linear layer untouched. The fix for features whose scale shifted
    (e.g. the same network on a larger canvas, where the global pool averages more background)."""
    new = nnx.clone(probe)
    f = np.asarray(f, np.float32)
    new.norm.mean[...] = f.mean(axis=0)
    new.norm.var[...] = f.var(axis=0)
    return new


def count_params(model: nnx.Module, head: str | None = None) -> int:
    """Number of parameters of ``model`` (or of its attribute ``head`` only)."""
    return counting.param_count(getattr(model, head) if head else model)
