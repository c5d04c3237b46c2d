"""Checkpoints of a training run with Orbax: model state, optimizer state and the epoch reached.

Everything that determines the rest of the run is saved: parameters, BatchNorm statistics and the dropout RNG
streams (all part of ``nnx.state(model)``), the optimizer's moments and step count, and the epoch. Batch order
is a function of (seed, epoch), so a run resumed from epoch k continues exactly as if it had not stopped
(tests/test_train_cli.py checks that to the bit).

Orbax stores float arrays without a checksum: a flipped byte in a data file restores silently, as different
weights (measured: a bit flipped at 30, 50, 70 or 90% of a 64x64 float32 array's file restored without an error
every time, with other values). So :func:`save` also writes the sha256 of every file of the checkpoint
(``<epoch>.sha256.json`` beside it) and :func:`restore` checks them first: a damaged checkpoint is named, never
loaded.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from flax import nnx

from course.features import file_sha256


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be resumed from; the message says why and what to do."""


class CheckpointWarning(UserWarning):
    """A damaged checkpoint was skipped in favour of an earlier intact one."""


def _manager(directory: Path, keep: int = 2) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(Path(directory).resolve(), options=ocp.CheckpointManagerOptions(max_to_keep=keep))


def save(directory: str | Path, epoch: int, model: nnx.Module, optimizer: nnx.Optimizer, meta: dict) -> None:
    """Write checkpoint ``epoch`` (keeping the two latest) and the run's description ``meta`` beside it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    primary = jax.process_index() == 0  # several processes: all save through Orbax, one writes the files beside
    if primary:
        (directory / "run.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    with _manager(directory) as mngr:
        mngr.save(epoch, args=ocp.args.StandardSave(_pure(model, optimizer)))
        mngr.wait_until_finished()
        kept = {str(s) for s in mngr.all_steps()}
    if not primary:
        return
    _sums_path(directory, epoch).write_text(json.dumps(_file_sums(directory / str(epoch)), indent=1))
    for old in directory.glob("*.sha256.json"):  # checkpoints the manager deleted
        if old.name.split(".")[0] not in kept:
            old.unlink()


def _sums_path(directory: Path, epoch: int) -> Path:
    return directory / f"{epoch}.sha256.json"


def _file_sums(step_dir: Path) -> dict[str, str]:
    """{relative path: sha256} of every file of one saved epoch."""
    return {str(f.relative_to(step_dir)): file_sha256(f) for f in sorted(step_dir.rglob("*")) if f.is_file()}


def _check_sums(directory: Path, epoch: int) -> None:
    """Raise ValueError naming the first file of checkpoint ``epoch`` whose bytes changed since it was saved."""
    path = _sums_path(directory, epoch)
    if not path.exists():
        raise ValueError(f"{path.name} is missing, so its files cannot be verified")
    saved, now = json.loads(path.read_text()), _file_sums(directory / str(epoch))
    for name, digest in saved.items():
        if now.get(name) != digest:
            what = "is missing" if name not in now else "changed since it was saved (sha256 mismatch)"
            raise ValueError(f"file {name} {what}")


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
    saved = json.loads((directory / "run.json").read_text())
    diff = {k: (saved.get(k), meta.get(k)) for k in set(saved) | set(meta) if saved.get(k) != meta.get(k)}
    if diff:
        raise CheckpointError(f"the checkpoint in {directory} is of another run (saved vs now: {diff}); "
                              f"resume with the same arguments, or use another --checkpoint-dir")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _pure(model, optimizer))
    damaged = []
    with _manager(directory) as mngr:
        for epoch in sorted(mngr.all_steps(), reverse=True):
            try:
                _check_sums(directory, epoch)
                restored = mngr.restore(epoch, args=ocp.args.StandardRestore(abstract))
                break
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
