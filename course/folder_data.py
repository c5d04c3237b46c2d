"""``--data folder:DIR``: a folder of JPEGs per class, decoded and augmented by grain on host worker processes.

Per epoch, the order of the training images is a permutation drawn from the epoch's seed. Global batch ``i`` is
positions ``i*B .. (i+1)*B`` of it, whatever the number of processes; each process decodes only its rows of it
(:func:`course.distributed.process_rows`: the rows its devices hold) and :func:`course.distributed.global_batch`
assembles the batch from every process's rows. So 1 process and N processes see the same global batches, and
the processes' examples are disjoint. (grain's own ``ShardByJaxProcess`` splits the *dataset* into one contiguous
part per process instead, which makes every global batch depend on the process count.)

grain runs the pipeline (:func:`pipeline`): ``MapDataset`` over this process's (record, position) pairs, ``map``
with :func:`course.image_folder.train_image` (random resized crop and flip, seeded per example), ``batch``, and
``mp_prefetch`` with ``workers`` worker processes decoding ahead of the training loop. The uint8 batch then goes
to the device two batches ahead (:func:`course.device_data.on_device`), so the copy overlaps the step, and is
turned into float32 there. Evaluation decodes the centre crop of every val image, each process its rows.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from course import distributed, image_folder
from course.data import DatasetError


def default_workers() -> int:
    """Decoding processes: one per CPU core but the one the training loop uses, at most 8."""
    return min(8, max(1, (os.cpu_count() or 2) - 1))


class _Example:
    """grain's map function: a (record, position) pair -> (image (S, S, 3) uint8, label, mask). Picklable, so
    grain can ship it to its worker processes. ``seed`` None: the evaluation crop; position -1: padding."""

    def __init__(self, folder: image_folder.ImageFolder, size: int, seed: int | None):
        self.paths, self.labels, self.size, self.seed = folder.paths, folder.labels, size, seed

    def __call__(self, pair):
        record, position = (int(v) for v in pair)
        if position < 0:  # padding of the last evaluation batch
            return np.zeros((self.size, self.size, 3), np.uint8), np.int32(0), False
        path = self.paths[record]
        if self.seed is None:
            img = image_folder.eval_image(path, self.size)
        else:
            img = image_folder.train_image(path, self.size, np.random.default_rng((self.seed, position)))
        return img, self.labels[record], True


def pipeline(folder: image_folder.ImageFolder, pairs: np.ndarray, size: int, seed: int | None, batch: int,
             workers: int):
    """grain's iterator over ``pairs`` (M, 2) of (record, position): batches of ``batch`` (images, labels,
    mask), decoded by ``workers`` processes (0: in this one)."""
    import grain
    from absl import flags

    if not flags.FLAGS.is_parsed():  # grain reads its options from absl flags, parsed only under absl's app.run
        flags.FLAGS.mark_as_parsed()  # their defaults, then
    ds = grain.MapDataset.source(pairs).map(_Example(folder, size, seed)).batch(batch, drop_remainder=True)
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=0))  # files are read by the workers
    return it.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers)) if workers > 0 else it


def _close(iterator) -> None:
    """Stop grain's worker processes and free their shared memory now (grain asks for it; GC may come late)."""
    if hasattr(iterator, "close"):
        iterator.close()


class FolderData:
    """``DIR/train`` for training (``epoch``), ``DIR/val`` for :meth:`test`; images (size, size, 3)."""

    def __init__(self, directory: str | Path, size: int, mesh=None, workers: int | None = None,
                 eval_batch: int = 256):
        root = Path(directory).expanduser()
        if not root.is_dir():
            raise DatasetError(f"{root} does not exist; folder:DIR needs DIR/train/<class>/*.jpg and "
                               f"DIR/val/<class>/*.jpg")
        self.train = image_folder.scan(root / "train")
        self.val = image_folder.scan(root / "val", classes=self.train.classes)
        self.root, self.size, self.mesh, self.eval_batch = root, size, mesh, eval_batch
        self.workers = default_workers() if workers is None else workers
        if self.workers < 0:
            raise ValueError(f"--workers must be 0 (decode in the training process) or more, not {self.workers}")
        self.classes, self.num_classes = self.train.classes, len(self.train.classes)
        self.input_shape = (size, size, 3)
        self.name = f"folder:{root}"

    def __len__(self) -> int:
        return len(self.train)

    def __repr__(self) -> str:
        return (f"FolderData({self.name!r}: train {len(self.train)}, val {len(self.val)} images, "
                f"{self.num_classes} classes, {self.size}x{self.size}, decoding workers: {self.workers})")

    def _sharding(self):
        from jax.sharding import NamedSharding, PartitionSpec as P

        return None if self.mesh is None else NamedSharding(self.mesh, P("data"))

    def rows(self, batch_size: int) -> np.ndarray:
        """The rows of each global batch this process decodes."""
        sharding = self._sharding()
        return np.arange(batch_size) if sharding is None else distributed.process_rows(sharding, batch_size)

    def epoch_pairs(self, batch_size: int, seed: int) -> np.ndarray:
        """(steps * rows, 2) (record, position in the epoch's order) pairs this process decodes, batch by batch."""
        steps = len(self) // batch_size
        order = np.random.default_rng(seed).permutation(len(self))[:steps * batch_size]
        positions = (np.arange(steps)[:, None] * batch_size + self.rows(batch_size)[None, :]).ravel()
        return np.stack([order[positions], positions], axis=1)

    def _global(self, batch_size: int, arrays):
        import jax

        sharding = self._sharding()
        return jax.device_put(arrays) if sharding is None else distributed.global_batch(sharding, batch_size, *arrays)

    def epoch(self, batch_size: int, seed: int):
        """The full batches of one epoch, (B, S, S, 3) float32 in [0, 1] and (B,) labels, on the device."""
        import jax

        from course.device_data import on_device, to_float

        if batch_size % (1 if self.mesh is None else self.mesh.devices.size):
            raise ValueError(f"batch of {batch_size} does not split evenly over {self.mesh.devices.size} devices")
        pairs = self.epoch_pairs(batch_size, seed)
        it = iter(pipeline(self.train, pairs, self.size, seed, len(self.rows(batch_size)), self.workers))
        normalise = jax.jit(to_float)
        try:
            for xb, yb, _ in on_device(it, put=lambda b: self._global(batch_size, b)):
                yield normalise(xb), yb
        finally:
            _close(it)

    def test(self, model) -> dict[str, float]:
        """Mean loss and accuracy on ``DIR/val`` (centre crops), every process evaluating its rows of each batch."""
        from course.device_data import on_device
        from course.training import eval_step

        n_dev = 1 if self.mesh is None else self.mesh.devices.size
        batch = -(-min(self.eval_batch, len(self.val)) // n_dev) * n_dev  # a multiple of the devices
        steps = -(-len(self.val) // batch)
        positions = (np.arange(steps)[:, None] * batch + self.rows(batch)[None, :]).ravel()
        pairs = np.stack([np.minimum(positions, len(self.val) - 1),
                          np.where(positions < len(self.val), positions, -1)], axis=1)
        model.eval()
        it = iter(pipeline(self.val, pairs, self.size, None, len(self.rows(batch)), self.workers))
        try:
            sums = [eval_step(model, *b) for b in on_device(it, put=lambda b: self._global(batch, b))]
        finally:
            _close(it)
        return {"loss": sum(float(s[0]) for s in sums) / len(self.val),
                "accuracy": sum(float(s[1]) for s in sums) / len(self.val)}
