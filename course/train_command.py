"""``python -m course train``: train any registered model on a named dataset, with checkpoints and resume.

Datasets: ``digits`` (on a canvas the size of the model's input), ``shapes`` (generated), ``cifar10:DIR`` (a local
CIFAR-10 directory) and ``synthetic`` (random images and labels of the model's own input shape, e.g. ImageNet's
224x224x3 and 1000 classes: for speed runs, where the data pipeline must not be the bottleneck).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from course import data as datasets
from course import models, precision, training
from course.device_data import SyntheticData

SCALES = {"small": dict(epochs=5, batch=64, examples=2048), "full": dict(epochs=30, batch=256, examples=51200)}


def load_data(spec: str, input_shape: tuple[int, int, int], num_classes: int, scale: str = "small",
              seed: int = 0, mesh=None) -> datasets.Dataset | SyntheticData:
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
    else:
        raise ValueError(f"unknown dataset {spec!r}; use digits, shapes, synthetic or cifar10:DIR")
    if c == 3 and ds.input_shape[-1] == 1:  # a colour model on grey data: repeat the channel
        ds = dataclasses.replace(ds, x_train=np.repeat(ds.x_train, 3, -1), x_test=np.repeat(ds.x_test, 3, -1))
    return ds


def train_run(model_name: str, data_spec: str, *, scale: str = "small", epochs: int | None = None,
              batch: int | None = None, dtype: str = "float32", lr: float = 1e-3, seed: int = 0,
              checkpoint_dir: str | Path | None = None, resume: bool = False, devices: int | None = None,
              verbose: bool = True, progress: bool = True) -> training.History:
    """Train ``model_name`` on ``data_spec`` and return the history of the epochs run now.

    With ``checkpoint_dir`` a checkpoint is written after every epoch; ``resume`` continues from the latest one
    (the same arguments are required: the run's description is stored beside the checkpoints).
    """
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
    mesh = None
    if devices is not None and devices != 1:
        from course.parallel import make_mesh

        mesh = make_mesh(None if devices == 0 else devices)
    ds = load_data(data_spec, spec.input_shape, spec.num_classes, scale, seed, mesh)
    model = models.build(model_name, seed=seed, num_classes=ds.num_classes, input_shape=ds.input_shape)
    opt = training.make_optimizer(model, lr)
    meta = dict(model=model_name, data=data_spec, scale=scale, batch=batch, dtype=dtype, lr=lr, seed=seed)
    first = 1
    if resume:
        if checkpoint_dir is None:
            raise ValueError("--resume needs --checkpoint-dir")
        first = checkpoint.restore(checkpoint_dir, model, opt, meta) + 1
        if first > epochs:
            raise ValueError(f"the checkpoint already reached epoch {first - 1}; ask for more --epochs to continue")
        if verbose:
            print(f"resumed from epoch {first - 1} in {checkpoint_dir}")
    def save(epoch, model, hist):
        if checkpoint_dir is not None:
            checkpoint.save(checkpoint_dir, epoch, model, opt, meta)

    if verbose:
        print(f"{model_name} on {ds!r}, batch {batch}, {dtype}, epochs {first}..{epochs}")
    return training.fit(model, ds, epochs=epochs, batch_size=batch, optimizer=opt, seed=seed,
                        loss_fn=precision.mixed_precision(spec.loss or training.cross_entropy, dtype),
                        verbose=verbose, callback=save, first_epoch=first, mesh=mesh, progress=progress)
