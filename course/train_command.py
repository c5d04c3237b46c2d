"""``python -m course train``: train any registered model on a named dataset, with checkpoints and resume.

Datasets: ``digits`` (on a canvas the size of the model's input), ``shapes`` (generated), ``cifar10:DIR`` (a local
CIFAR-10 directory) and ``synthetic`` (random images and labels of the model's own input shape, e.g. ImageNet's
224x224x3 and 1000 classes: for speed runs, where the data pipeline must not be the bottleneck), and
``folder:DIR`` (``DIR/train/<class>/*.jpg`` and ``DIR/val/<class>/*.jpg``, decoded by :mod:`course.folder_data`).

With several processes (:mod:`course.distributed`) the mesh spans every process's devices, each process feeds its
rows of every global batch, and only process 0 prints; :func:`summary` is what ``train --json`` prints.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
from pathlib import Path

import jax
import numpy as np

from course import data as datasets
from course import models, parameters, precision, training
from course.device_data import SyntheticData

SCALES = {"small": dict(epochs=5, batch=64, examples=2048), "full": dict(epochs=30, batch=256, examples=51200)}


def load_data(spec: str, input_shape: tuple[int, int, int], num_classes: int, scale: str = "small",
              seed: int = 0, mesh=None, workers: int | None = None):
    """The dataset named by ``spec``, shaped for a model whose default input is ``input_shape``. CIFAR-10 stays
    bytes (uint8: fit normalises it on the device); "synthetic" is generated on the device (over ``mesh``)."""
    h, w, c = input_shape
    if spec == "digits":
        ds = datasets.digits(canvas=max(h, 8), seed=seed)
    elif spec == "shapes":
        n = SCALES[scale]["examples"]
        ds = datasets.shapes(n_train=n, n_test=n // 4, size=h, seed=seed)
    elif spec.startswith("cifar10:"):
        ds = datasets.load_cifar10(spec.split(":", 1)[1], dtype=np.uint8)
    elif spec == "synthetic":  # generated on the device, batch by batch: nothing of size n on the host
        return SyntheticData(input_shape, num_classes, SCALES[scale]["examples"], seed=seed, mesh=mesh)
    elif spec.startswith("folder:"):  # decoded and augmented by grain's worker processes, rows split by process
        from course.folder_data import FolderData

        return FolderData(spec.split(":", 1)[1], size=h, mesh=mesh, workers=workers)
    else:
        raise ValueError(f"unknown dataset {spec!r}; use digits, shapes, synthetic, cifar10:DIR or folder:DIR")
    if spec.startswith("cifar10:") and (h, w) != ds.input_shape[:2]:
        raise ValueError(f"CIFAR-10 images are {ds.input_shape[0]}x{ds.input_shape[1]}; leave --size out or use "
                         f"--size {ds.input_shape[0]} (folder:DIR data is resized to any --size)")
    if c == 3 and ds.input_shape[-1] == 1:  # a colour model on grey data: repeat the channel
        ds = dataclasses.replace(ds, x_train=np.repeat(ds.x_train, 3, -1), x_test=np.repeat(ds.x_test, 3, -1))
    return ds


def train_run(model_name: str, data_spec: str, *, scale: str = "small", epochs: int | None = None,
              batch: int | None = None, dtype: str = "float32", lr: float = 1e-3, seed: int = 0,
              checkpoint_dir: str | Path | None = None, resume: bool = False, devices: int | None = None,
              verbose: bool = True, progress: bool = True, overwrite: bool = False, size: int | None = None,
              workers: int | None = None, result: dict | None = None) -> training.History:
    """Train ``model_name`` on ``data_spec`` and return the history of the epochs run now.

    With ``checkpoint_dir`` a checkpoint is written after every epoch; ``resume`` continues from the latest one
    (the same arguments are required: the run's description is stored beside the checkpoints). A directory that
    holds another run's checkpoints is refused unless ``overwrite`` (see :func:`course.checkpoint.start`). A run
    whose loss diverges (not finite, or far above a uniform guess's) stops with an error naming the learning rate.
    ``size`` sets the input height = width (default: the model's own). ``workers``: decoding processes for folder
    data. A ``result`` dict receives the trained model, optimizer and data (for :func:`summary`). In a run of
    several processes (after :func:`course.distributed.join`) every process calls this; only process 0 prints.
    """
    import jax
    from course import checkpoint

    spec = models.get_spec(model_name)
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, not {scale!r}")
    if dtype not in precision.DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(precision.DTYPES)}, not {dtype!r}")
    epochs = SCALES[scale]["epochs"] if epochs is None else epochs
    batch = SCALES[scale]["batch"] if batch is None else batch
    if epochs < 1 or batch < 1:
        raise ValueError(f"epochs and batch must be positive, got epochs={epochs}, batch={batch}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"--lr must be a positive learning rate (e.g. 1e-3), not {lr}")
    parameters.check_seed(seed, "--seed")
    if resume and overwrite:
        raise ValueError("--resume continues the run in --checkpoint-dir and --overwrite replaces it: pass one")
    if overwrite and checkpoint_dir is None:
        raise ValueError("--overwrite needs --checkpoint-dir (the folder whose checkpoints it replaces)")
    verbose, progress = verbose and jax.process_index() == 0, progress and jax.process_index() == 0
    if jax.process_count() > 1:  # the mesh spans every process's devices
        if devices not in (None, 0, jax.device_count()):
            raise ValueError(f"with {jax.process_count()} processes the mesh spans all {jax.device_count()} devices; "
                             f"leave --devices out (or pass 0)")
        devices = 0
    if size is not None and size < 1:
        raise ValueError(f"--size must be positive, got {size}")
    input_shape = spec.input_shape if size is None else (size, size, spec.input_shape[2])
    mesh = None
    if devices is not None and devices != 1:
        from course.parallel import make_mesh

        mesh = make_mesh(None if devices == 0 else devices)
    ds = load_data(data_spec, input_shape, spec.num_classes, scale, seed, mesh, workers)
    model = models.build(model_name, seed=seed, num_classes=ds.num_classes, input_shape=ds.input_shape)
    opt = training.make_optimizer(model, lr)
    meta = dict(model=model_name, data=data_spec, scale=scale, batch=batch, dtype=dtype, lr=lr, seed=seed)
    meta.update({"size": size} if size is not None else {})
    meta.update({"classes": list(ds.classes)} if data_spec.startswith("folder:") else {})  # stored with the run
    if result is not None:
        result.update(model=model, optimizer=opt, data=ds, batch=batch)
    first = 1
    verbose = verbose and jax.process_index() == 0  # one log for a run of several processes (jax is started by now)
    if resume:
        if checkpoint_dir is None:
            raise ValueError("--resume needs --checkpoint-dir")
        if mesh is not None:  # restore onto the mesh: with several processes, each reads its devices' part
            from course.parallel import replicate

            replicate(mesh, model, opt)
        first = checkpoint.restore(checkpoint_dir, model, opt, meta) + 1
        if first > epochs:
            raise ValueError(f"the checkpoint already reached epoch {first - 1}; ask for more --epochs to continue")
        if verbose:
            print(f"resumed from epoch {first - 1} in {checkpoint_dir}")
    elif checkpoint_dir is not None:
        checkpoint.start(checkpoint_dir, meta, overwrite)
    n_train = len(ds) if hasattr(ds, "__len__") else len(ds.x_train)

    def after_epoch(epoch, model, hist):
        check_converging(hist.train_loss[-1], ds.num_classes, lr, epoch)
        saved = None
        if checkpoint_dir is not None:
            saved = checkpoint.save(checkpoint_dir, epoch, model, opt)
        if verbose:
            print(epoch_line(hist, epochs, n_train // batch * batch, saved), flush=True)

    if verbose:
        print(f"{model_name} on {ds!r}, batch {batch}, {dtype}, epochs {first}..{epochs}")
    if hasattr(ds, "plan"):  # folder data: one decoding pipeline for the whole run (fit's epoch seeds)
        ds.plan(batch, [seed + e for e in range(first, epochs + 1)])
    try:
        return training.fit(model, ds, epochs=epochs, batch_size=batch, optimizer=opt, seed=seed,
                            loss_fn=precision.mixed_precision(spec.loss or training.cross_entropy, dtype),
                            verbose=False, callback=after_epoch, first_epoch=first, mesh=mesh, progress=progress)
    finally:
        if hasattr(ds, "close"):
            ds.close()  # grain's worker processes


DIVERGED = 10.0  # a train loss above DIVERGED x a uniform guess's cross-entropy, log(classes), is divergence


def check_converging(loss: float, num_classes: int, lr: float, epoch: int) -> None:
    """Raise ValueError naming the learning rate when an epoch's mean train loss is not finite or more than
    :data:`DIVERGED` times a uniform guess's (the weights of that epoch are then not saved)."""
    guess = math.log(num_classes)
    if not math.isfinite(loss) or loss > DIVERGED * guess:
        raise ValueError(f"training diverged at epoch {epoch}: train loss {loss:.4g}, while guessing uniformly "
                         f"scores {guess:.2f}; the learning rate --lr {lr:g} is too large, try {lr / 10:g}")


def epoch_line(hist: training.History, epochs: int, images: int, saved: Path | None) -> str:
    """One epoch of the train log: losses, accuracies, the epoch's wall time (evaluation included) and the
    images trained per second of it, and where its checkpoint was saved."""
    s = hist.seconds[-1]
    line = (f"epoch {hist.epoch[-1]:>{len(str(epochs))}}/{epochs}  train loss {hist.train_loss[-1]:.3f} "
            f"acc {hist.train_accuracy[-1]:.3f}")
    if hist.test_loss:
        line += f"  |  test loss {hist.test_loss[-1]:.3f} acc {hist.test_accuracy[-1]:.3f}"
    line += f"  |  {s:.1f} s, {images / s:,.0f} images/s"
    return line + (f"  |  checkpoint saved: {saved}" if saved else "")


def summary(hist: training.History, result: dict) -> dict:
    """What ``train --json`` prints: the run's size and outcome, and ``param_sq_sum``, the float64 sum of squares
    of every parameter (a digest two runs can be compared by, e.g. 1 process on 2 devices vs 2 processes).
    ``images_per_s``: training images of the epochs run now per second of their wall time (compiling and the
    per-epoch evaluation included)."""
    import jax
    from flax import nnx

    model, opt = result["model"], result["optimizer"]
    leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
    ds = result["data"]
    steps_now = len(hist.epoch) * ((len(ds) if hasattr(ds, "epoch") else len(ds.y_train)) // result["batch"])
    return {"epochs": hist.epoch[-1], "steps": int(opt.step[...]), "global_batch": result["batch"],
            "processes": jax.process_count(), "devices": jax.device_count(),
            "final_train_loss": hist.train_loss[-1], "final_train_accuracy": hist.train_accuracy[-1],
            "test_loss": hist.test_loss[-1] if hist.test_loss else None,
            "test_accuracy": hist.test_accuracy[-1] if hist.test_accuracy else None,
            "images_per_s": steps_now * result["batch"] / sum(hist.seconds),
            "param_sq_sum": float(sum(np.sum(np.square(np.asarray(a, np.float64))) for a in leaves))}


@contextlib.contextmanager
def stdout_to_stderr():
    """Send everything written to stdout (Python's prints and C++ libraries' output, such as gloo's connection
    line) to stderr until the block ends, so that ``train --json`` leaves stdout to its JSON object alone."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
