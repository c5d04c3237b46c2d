"""Checkpoints of a training run with Orbax: model state, optimizer state and the epoch reached.

Everything that determines the rest of the run is saved: parameters, BatchNorm statistics and the dropout RNG
streams (all part of ``nnx.state(model)``), the optimizer's moments and step count, and the epoch. Batch order
is a function of (seed, epoch), so a run resumed from epoch k continues exactly as if it had not stopped
(tests/test_train_cli.py checks that to the bit).

A checkpoint directory holds ONE run. :func:`start` writes its description, ``run.json`` (model, data, batch,
learning rate, seed, ...), once and atomically, and refuses a directory that already holds another run's
checkpoints unless told to replace them; :func:`restore` refuses a description that differs from the saved one.
So two experiments can never be mixed in one directory.

Orbax stores float arrays without a checksum: a flipped byte in a data file restores silently, as different
weights (measured: a bit flipped at 30, 50, 70 or 90% of a 64x64 float32 array's file restored without an error
every time, with other values). So :func:`save` also writes the sha256 of every file of the checkpoint and of
``run.json`` (``<epoch>.sha256.json`` beside it, :mod:`course.integrity`) and :func:`restore` checks them first: a
damaged checkpoint is named, never loaded.
"""
from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from flax import nnx

from course import integrity

RUN_FILE = "run.json"
_OURS = re.compile(r"^\d+(\.orbax-checkpoint-tmp.*)?$|^\d+\.sha256\.json$")  # what start(overwrite=True) removes


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be resumed from; the message says why and what to do."""


class CheckpointWarning(UserWarning):
    """A damaged checkpoint was skipped in favour of an earlier intact one."""


def _manager(directory: Path, keep: int = 2) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(Path(directory).resolve(), options=ocp.CheckpointManagerOptions(max_to_keep=keep))


def start(directory: str | Path, meta: dict, overwrite: bool = False) -> None:
    """Begin a new run in ``directory``: write its description ``meta`` as ``run.json``, atomically.

    A directory holding checkpoints already (another run, or this one before) is refused with a
    :class:`CheckpointError` naming it: continue that run (``--resume``), pick another directory, or pass
    ``overwrite=True`` (``--overwrite``), which deletes its checkpoints first.
    """
    directory = Path(directory)
    epoch = latest_epoch(directory)
    if epoch is not None and not overwrite:  # every process sees the same folder and stops alike
        raise CheckpointError(
            f"{directory} already holds the checkpoints of a run (up to epoch {epoch}{_described(directory)}); "
            f"pass --resume to continue it, choose another --checkpoint-dir, or pass --overwrite to replace it")
    if jax.process_index() != 0:  # several processes: process 0 alone clears the folder and writes run.json
        return
    if epoch is not None:
        for entry in directory.iterdir():
            if _OURS.match(entry.name) or entry.name == RUN_FILE:
                if entry.is_dir():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
    integrity.write_json(directory / RUN_FILE, meta)


def _described(directory: Path) -> str:
    """``: model=..., lr=...`` from the directory's run.json, or nothing when it cannot be read."""
    try:
        meta = integrity.read_json(directory / RUN_FILE)
        return ": " + ", ".join(f"{k}={v}" for k, v in sorted(meta.items()))
    except (integrity.IntegrityError, AttributeError):
        return ""


def save(directory: str | Path, epoch: int, model: nnx.Module, optimizer: nnx.Optimizer) -> Path:
    """Write checkpoint ``epoch`` of the run :func:`start` began in ``directory`` (keeping the two latest) and its
    sha256 manifest; return the epoch's directory. With several processes all of them save through Orbax
    together; process 0 alone writes the manifest beside it."""
    directory = Path(directory)
    primary = jax.process_index() == 0
    if primary and not (directory / RUN_FILE).is_file():
        raise CheckpointError(f"{directory} has no {RUN_FILE}: call checkpoint.start(directory, meta) before the "
                              f"first save")
    with _manager(directory) as mngr:
        mngr.save(epoch, args=ocp.args.StandardSave(_pure(model, optimizer)))
        mngr.wait_until_finished()
        kept = {str(s) for s in mngr.all_steps()}
    step = directory / str(epoch)
    if not primary:
        return step
    integrity.write_manifest(_sums_path(directory, epoch), directory,
                             [RUN_FILE, *(f.relative_to(directory) for f in step.rglob("*"))])
    for old in directory.glob("*.sha256.json"):  # checkpoints the manager deleted
        if old.name.split(".")[0] not in kept:
            old.unlink()
    return step


def _sums_path(directory: Path, epoch: int) -> Path:
    return directory / f"{epoch}.sha256.json"


def latest_epoch(directory: str | Path) -> int | None:
    directory = Path(directory)
    if not directory.is_dir():
        return None
    with _manager(directory) as mngr:
        return mngr.latest_step()


def restore(directory: str | Path, model: nnx.Module, optimizer: nnx.Optimizer, meta: dict,
            fallback: bool = True) -> int:
    """Load the latest intact checkpoint into ``model`` and ``optimizer`` (in place) and return its epoch.

    ``meta`` must equal the saved run description (same model, data, batch size, ...): resuming a different
    run from this directory would silently mix two experiments, so it is refused. A checkpoint that cannot be read
    (damaged bytes, a missing file) is named in a warning and the previous one is used; with ``fallback=False`` it
    is a :class:`CheckpointError` instead. If none can be read, the error says so.
    """
    directory = Path(directory)
    epoch = latest_epoch(directory)
    if epoch is None:
        raise CheckpointError(f"no checkpoint in {directory}; train without --resume first")
    saved = integrity.read_json(directory / RUN_FILE,
                                f"it records the arguments of the run whose checkpoints are there, and without it "
                                f"they cannot be resumed safely: restore it from a backup, train into another "
                                f"--checkpoint-dir, or pass --overwrite (without --resume) to replace them")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{directory / RUN_FILE} is not a run description (a JSON object); restore it from a "
                              f"backup, or train into another --checkpoint-dir")
    diff = {k: (saved.get(k), meta.get(k)) for k in set(saved) | set(meta) if saved.get(k) != meta.get(k)}
    if diff:
        raise CheckpointError(f"the checkpoint in {directory} is of another run (saved vs now: {diff}); "
                              f"resume with the same arguments, or use another --checkpoint-dir")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _pure(model, optimizer))
    damaged = []
    with _manager(directory) as mngr:
        for epoch in sorted(mngr.all_steps(), reverse=True):
            try:
                integrity.verify(_sums_path(directory, epoch), directory)
                restored = mngr.restore(epoch, args=ocp.args.StandardRestore(abstract))
                break
            except integrity.IntegrityError as e:
                reason = str(e)
            except Exception as e:  # orbax/tensorstore raise many types; the first line says what broke
                reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            damaged.append(f"epoch {epoch} ({directory / str(epoch)}): {reason}")
            if not fallback:
                raise CheckpointError(f"the checkpoint of {damaged[-1]} cannot be read; delete that epoch's "
                                      f"directory to resume from the one before, or train again") from None
        else:
            raise CheckpointError(f"no checkpoint in {directory} can be read: {'; '.join(damaged)}. "
                                  f"Delete the directory and train again without --resume")
    if damaged:
        warnings.warn(f"damaged checkpoint skipped: {'; '.join(damaged)}; resuming from epoch {epoch}",
                      CheckpointWarning, stacklevel=2)
    for name, node in (("model", model), ("optimizer", optimizer)):
        state = nnx.state(node)
        current = nnx.to_pure_dict(state)
        nnx.replace_by_pure_dict(state, jax.tree.map(_rewrap_key, current, restored[name]))
        nnx.update(node, state)
    return epoch


def _is_key(x) -> bool:
    return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _rewrap_key(current, loaded):
    """Restore a typed PRNG key (with the model's own implementation) from the raw key data Orbax stored."""
    return jax.random.wrap_key_data(loaded, impl=jax.random.key_impl(current)) if _is_key(current) else loaded


def _pure(model: nnx.Module, optimizer: nnx.Optimizer) -> dict:
    """Plain nested dicts of arrays (what Orbax stores); typed PRNG keys become their raw key data."""
    def plain(x):
        return jax.random.key_data(x) if _is_key(x) else x

    return {name: jax.tree.map(plain, nnx.to_pure_dict(nnx.state(node)))
            for name, node in (("model", model), ("optimizer", optimizer))}
