"""``--data folder:DIR``: a folder of JPEGs per class, decoded and augmented by grain on host worker processes.

Per epoch, the order of the training images is a permutation drawn from the epoch's seed. Global batch ``i`` is
positions ``i*B .. (i+1)*B`` of it, whatever the number of processes; each process decodes only its rows of it
(:func:`course.distributed.process_rows`: the rows its devices hold) and :func:`course.distributed.global_batch`
assembles the batch from every process's rows. So 1 process and N processes see the same global batches, and
the processes' examples are disjoint. (grain's own ``ShardByJaxProcess`` splits the *dataset* into one contiguous
part per process instead, which makes every global batch depend on the process count.)

grain runs the pipeline (:func:`pipeline`): ``MapDataset`` over this process's items (which image, its position,
the epoch's seed), ``map`` with :func:`course.image_folder.train_image` (random resized crop and flip, seeded per
example) or ``eval_image``, ``batch``, and ``mp_prefetch`` with ``workers`` worker processes decoding ahead of the
training loop. The uint8 batch then goes to the device two batches ahead (:func:`course.device_data.on_device`),
so the copy overlaps the step, and is turned into float32 there. Evaluation decodes the centre crop of every val
image, each process its rows.

grain's workers import grain, and so jax: seconds to start. After :meth:`FolderData.plan` (the train command
calls it), one pipeline serves the whole run, every epoch's training batches followed by its val batches, so
the workers start once and decode the val images while the epoch's last steps run.
"""
from __future__ import annotations

import collections
import os
from pathlib import Path

import numpy as np

from course import distributed, image_folder
from course.data import DatasetError


def default_workers() -> int:
    """Decoding processes: one per CPU core but the one the training loop uses, at most 8."""
    return min(8, max(1, (os.cpu_count() or 2) - 1))


TRAIN, VAL = 0, 1  # an item's split


class _Example:
    """grain's map function: an item (split, record, position, seed) -> (image (S, S, 3) uint8, label, mask).
    Picklable, so grain can ship it to its worker processes. Position -1: padding of the last val batch."""

    def __init__(self, train: image_folder.ImageFolder, val: image_folder.ImageFolder, size: int):
        self.paths = (train.paths, val.paths)
        self.labels = (train.labels, val.labels)
        self.size = size

    def __call__(self, item):
        split, record, position, seed = (int(v) for v in item)
        if position < 0:
            return np.zeros((self.size, self.size, 3), np.uint8), np.int32(0), False
        path = self.paths[split][record]
        if split == VAL:
            img = image_folder.eval_image(path, self.size)
        else:
            img = image_folder.train_image(path, self.size, np.random.default_rng((seed, position)))
        return img, self.labels[split][record], True


def pipeline(train: image_folder.ImageFolder, val: image_folder.ImageFolder, items: np.ndarray, size: int,
             batch: int, workers: int):
    """grain's iterator over ``items`` (M, 4): batches of ``batch`` (images, labels, mask), decoded by
    ``workers`` processes (0: in this one)."""
    import grain
    from absl import flags

    if not flags.FLAGS.is_parsed():  # grain reads its options from absl flags, parsed only under absl's app.run
        flags.FLAGS.mark_as_parsed()  # their defaults, then
    ds = grain.MapDataset.source(items).map(_Example(train, val, size)).batch(batch, drop_remainder=True)
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=0))  # files are read by the workers
    return it.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers)) if workers > 0 else it


def _close(iterator) -> None:
    """Stop grain's worker processes and free their shared memory now (grain asks for it; GC may come late)."""
    if hasattr(iterator, "close"):
        iterator.close()


class _Stream:
    """One pipeline over several passes, consumed in order: ``schedule`` holds ((split, seed), batches) per pass."""

    def __init__(self, iterator, schedule):
        self.iterator, self.schedule, self.broken = iterator, collections.deque(schedule), False

    def take(self, key):
        """The next pass's batches if it is ``key`` (split, seed; seed None for val), else None."""
        if self.broken or not self.schedule or self.schedule[0][0] != key:
            return None
        _, n = self.schedule.popleft()
        return self._batches(n)

    def _batches(self, n):
        done = 0
        try:
            for _ in range(n):
                yield next(self.iterator)
                done += 1
        finally:
            self.broken |= done < n  # left early: the items that follow are out of step

    def close(self):
        _close(self.iterator)


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
        self._plan: tuple[int, list[int]] | None = None  # (batch, epoch seeds) of the run, from plan()
        self._stream: _Stream | None = None

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

    def epoch_items(self, batch_size: int, seed: int) -> np.ndarray:
        """:meth:`epoch_pairs` as pipeline items (split, record, position, seed): (M, 4)."""
        pairs = self.epoch_pairs(batch_size, seed)
        return np.column_stack([np.full(len(pairs), TRAIN), pairs, np.full(len(pairs), seed)])

    def val_items(self, batch_size: int) -> np.ndarray:
        """Every val image once, in order, this process's rows of each ``batch_size`` batch; the last batch padded
        (position -1): (M, 4)."""
        steps = -(-len(self.val) // batch_size)
        positions = (np.arange(steps)[:, None] * batch_size + self.rows(batch_size)[None, :]).ravel()
        real = positions < len(self.val)
        return np.column_stack([np.full(len(positions), VAL), np.where(real, positions, 0),
                                np.where(real, positions, -1), np.full(len(positions), -1)])

    def plan(self, batch_size: int, seeds: list[int]) -> None:
        """Announce the run: ``epoch(batch_size, s)`` then :meth:`test` for each ``s`` of ``seeds``, in order. The
        epochs then share one pipeline (its workers start once); any other call still works, with its own."""
        self._plan = (batch_size, list(seeds))

    def _passes(self, key, batch_size: int):
        """Batches of one pass (``key`` = (TRAIN, seed) or (VAL, None)) from the run's pipeline if it is next
        there, else from a pipeline of its own (the rest of the plan, when the plan starts here)."""
        if self._stream is not None:
            batches = self._stream.take(key)
            if batches is not None:
                return batches
            self._stream.close()
            self._stream = None
        planned = (key[0] == TRAIN and self._plan is not None and self._plan[0] == batch_size
                   and key[1] in self._plan[1])
        val_batch = self._val_batch(batch_size)
        if planned:  # the rest of the run: each epoch, then its evaluation (val_batch == batch_size then)
            seeds = self._plan[1][self._plan[1].index(key[1]):]
            passes = [p for s in seeds for p in (((TRAIN, s), self.epoch_items(batch_size, s), batch_size),
                                                 ((VAL, None), self.val_items(val_batch), val_batch))]
        elif key[0] == TRAIN:
            passes = [(key, self.epoch_items(batch_size, key[1]), batch_size)]
        else:
            passes = [(key, self.val_items(val_batch), val_batch)]
        local = len(self.rows(passes[0][2]))  # rows per batch, the same in every pass
        items = np.concatenate([p[1] for p in passes])
        iterator = iter(pipeline(self.train, self.val, items, self.size, local, self.workers))
        self._stream = _Stream(iterator, [(k, len(it) // local) for k, it, _ in passes])
        return self._stream.take(key)

    def _val_batch(self, batch_size: int | None) -> int:
        """Evaluation batch: the training batch in a planned run (one pipeline, one batch shape), else
        ``eval_batch``; at most the val set, a multiple of the devices."""
        n_dev = 1 if self.mesh is None else self.mesh.devices.size
        b = self._plan[0] if self._plan is not None else min(self.eval_batch, len(self.val))
        return -(-b // n_dev) * n_dev

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
        normalise = jax.jit(to_float)
        for xb, yb, _ in on_device(self._passes((TRAIN, seed), batch_size), put=lambda b: self._global(batch_size, b)):
            yield normalise(xb), yb

    def test(self, model) -> dict[str, float]:
        """Mean loss and accuracy on ``DIR/val`` (centre crops), every process evaluating its rows of each batch."""
        from course.device_data import on_device
        from course.training import eval_step

        batch = self._val_batch(None)
        model.eval()
        batches = self._passes((VAL, None), batch)
        sums = [eval_step(model, *b) for b in on_device(batches, put=lambda b: self._global(batch, b))]
        if self._stream is not None and not self._stream.schedule:
            self.close()  # the plan is done
        return {"loss": sum(float(s[0]) for s in sums) / len(self.val),
                "accuracy": sum(float(s[1]) for s in sums) / len(self.val)}

    def close(self) -> None:
        """Stop the pipeline's worker processes."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None
