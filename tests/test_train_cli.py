"""`python -m course train`: arguments and errors, checkpoint + resume that continues exactly, mixed precision,
and data parallelism over 8 simulated CPU devices matching the single-device run."""
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from flax import nnx

from course import checkpoint, data, models, train_command, training
from course.__main__ import main


def params(model):
    return [np.asarray(v) for v in jax.tree.leaves(nnx.state(model, nnx.Param))]


@pytest.mark.slow
def test_resume_continues_exactly(tmp_path, capsys):
    straight = train_command.train_run("small_cnn", "digits", epochs=3, seed=1, verbose=False)
    train_command.train_run("small_cnn", "digits", epochs=2, seed=1, checkpoint_dir=tmp_path, verbose=False)
    assert checkpoint.latest_epoch(tmp_path) == 2
    resumed = train_command.train_run("small_cnn", "digits", epochs=3, seed=1, checkpoint_dir=tmp_path, resume=True,
                             verbose=False)
    assert resumed.epoch == [3]
    assert resumed.train_loss == straight.train_loss[-1:] and resumed.test_accuracy == straight.test_accuracy[-1:]


class DropBN(nnx.Module):
    """BatchNorm statistics and a dropout RNG stream: state beyond parameters that a resume must restore."""

    def __init__(self, rngs):
        self.conv = nnx.Conv(1, 4, kernel_size=(3, 3), use_bias=False, rngs=rngs)  # BN follows: no bias
        self.bn = nnx.BatchNorm(4, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.head = nnx.Linear(4, 10, rngs=rngs)

    def __call__(self, x):
        return self.head(self.drop(nnx.relu(self.bn(self.conv(x))).mean((1, 2))))


def test_checkpoint_restores_batch_stats_rng_and_optimizer(tmp_path):
    ds = data.digits()
    a = DropBN(nnx.Rngs(0))
    opt_a = training.make_optimizer(a, 1e-2)
    training.fit(a, ds, epochs=3, optimizer=opt_a, verbose=False)
    b = DropBN(nnx.Rngs(0))
    opt_b = training.make_optimizer(b, 1e-2)
    training.fit(b, ds, epochs=1, optimizer=opt_b, verbose=False)
    checkpoint.start(tmp_path, {"run": "x"})
    checkpoint.save(tmp_path, 1, b, opt_b)
    c = DropBN(nnx.Rngs(7))  # different initial weights and RNG stream: everything must come from the checkpoint
    opt_c = training.make_optimizer(c, 1e-2)
    assert checkpoint.restore(tmp_path, c, opt_c, {"run": "x"}) == 1
    training.fit(c, ds, epochs=3, optimizer=opt_c, first_epoch=2, verbose=False)
    for pa, pc in zip(params(a), params(c)):
        np.testing.assert_array_equal(pa, pc)
    np.testing.assert_array_equal(a.bn.mean[...], c.bn.mean[...])
    with pytest.raises(checkpoint.CheckpointError, match="of another run"):
        checkpoint.restore(tmp_path, c, opt_c, {"run": "y"})


def test_bfloat16_mixed_precision_trains(capsys):
    h = train_command.train_run("small_cnn", "digits", epochs=3, dtype="bfloat16", lr=3e-3, verbose=False)
    assert np.isfinite(h.train_loss).all() and h.train_loss[-1] < h.train_loss[0]
    assert h.test_accuracy[-1] > 0.3


@pytest.mark.parametrize("argv,message", [
    (["train", "resnet5000", "--data", "digits"], "unknown model 'resnet5000'; known models:"),
    (["train", "small_cnn", "--data", "imagenet"], "unknown dataset 'imagenet'"),
    (["train", "small_cnn", "--data", "cifar10:/no/such/dir"], "does not exist"),
    (["train", "small_cnn", "--data", "digits", "--resume"], "--resume needs --checkpoint-dir"),
    (["train", "small_cnn", "--data", "digits", "--devices", "64"], "asked for 64 devices"),
])
def test_bad_arguments_are_clear_errors(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_resume_from_an_empty_directory_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "small_cnn", "--data", "digits", "--checkpoint-dir", str(tmp_path), "--resume"]) == 2
    assert "no checkpoint in" in capsys.readouterr().err


def test_cli_train_prints_epochs(tmp_path, capsys):
    assert main(["train", "small_cnn", "--data", "shapes", "--epochs", "1", "--checkpoint-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "epoch 1/1  train loss" in out and checkpoint.latest_epoch(tmp_path) == 1


EIGHT_DEVICES = textwrap.dedent("""
    import numpy as np, jax
    from flax import nnx
    import course
    from course import data, parallel, training
    from tests.test_train_cli import DropBN
    assert len(jax.devices()) == 8
    ds = data.digits()
    out = []
    for mesh in (None, parallel.make_mesh(8)):
        m = DropBN(nnx.Rngs(0))
        m.drop.rate = 0.0  # dropout masks are drawn per shard, so compare without them
        h = training.fit(m, ds, epochs=2, batch_size=64, lr=1e-2, mesh=mesh, verbose=False)
        floats = nnx.state(m, nnx.Any(nnx.Param, nnx.BatchStat))  # weights and BatchNorm statistics
        out.append((h.train_loss, [np.asarray(v) for v in jax.tree.leaves(floats)]))
    (l1, s1), (l8, s8) = out
    np.testing.assert_allclose(l1, l8, rtol=1e-5)
    for a, b in zip(s1, s8):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    print("8-device run matches", len(s1), "arrays")
    # the mesh is really used: each batch fit gathers (or generates) on the devices is split 8 ways, every
    # weight of the trained model replicated
    from course.device_data import DeviceData, SyntheticData
    mesh = parallel.make_mesh(8)
    for source in (DeviceData(ds.x_train, ds.y_train, mesh), SyntheticData((8, 8, 1), 10, 128, mesh=mesh)):
        xb, yb = next(source.epoch(64, 0))
        for a in (xb, yb):
            assert [s.data.shape[0] for s in a.addressable_shards] == [8] * 8, a.sharding
            assert len({s.device for s in a.addressable_shards}) == 8
    m = DropBN(nnx.Rngs(0))
    opt = training.make_optimizer(m, 1e-2)
    parallel.replicate(mesh, m, opt)
    leaves = jax.tree.leaves(nnx.state((m, opt)))
    assert all(len(a.sharding.device_set) == 8 and a.sharding.is_fully_replicated for a in leaves)
    print("batch split 8 ways, weights replicated")
""")


@pytest.mark.slow
def test_eight_simulated_devices_match_one(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", EIGHT_DEVICES], env=env, cwd=root, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "8-device run matches" in r.stdout and "batch split 8 ways, weights replicated" in r.stdout


def _corrupt(step_dir):
    """Overwrite the middle of every data file of one saved epoch with junk bytes."""
    files = [f for f in step_dir.rglob("*") if f.is_file() and f.stat().st_size > 64 and "json" not in f.name]
    assert files, f"no data files under {step_dir}"
    for f in files:
        raw = bytearray(f.read_bytes())
        mid = len(raw) // 2
        raw[mid:mid + 32] = b"\xff" * min(32, len(raw) - mid)
        f.write_bytes(bytes(raw))


def test_one_flipped_bit_is_caught_although_orbax_would_restore_it(tmp_path):
    """Orbax has no checksum for float data: without course.checkpoint's sha256 list this restores silently."""
    m = models.build("small_cnn", seed=5)
    opt = training.make_optimizer(m, 1e-3)
    meta = {"run": "a"}
    checkpoint.start(tmp_path, meta)
    for epoch in (1, 2):
        checkpoint.save(tmp_path, epoch, m, opt)
    assert sorted(p.name for p in tmp_path.glob("*.sha256.json")) == ["1.sha256.json", "2.sha256.json"]
    biggest = max((f for f in (tmp_path / "2").rglob("*") if f.is_file()), key=lambda f: f.stat().st_size)
    raw = bytearray(biggest.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    biggest.write_bytes(bytes(raw))
    with pytest.raises(checkpoint.CheckpointError, match=r"epoch 2 .*sha256 mismatch"):
        checkpoint.restore(tmp_path, m, opt, meta, fallback=False)
    with pytest.warns(checkpoint.CheckpointWarning, match="damaged checkpoint skipped: epoch 2"):
        assert checkpoint.restore(tmp_path, m, opt, meta) == 1
    checkpoint.save(tmp_path, 3, m, opt)  # keeps two: epoch 1's checkpoint and its checksums go
    assert sorted(p.name for p in tmp_path.glob("*.sha256.json")) == ["2.sha256.json", "3.sha256.json"]


@pytest.mark.slow
def test_a_corrupt_latest_checkpoint_is_named_and_the_previous_one_used(tmp_path):
    train_command.train_run("small_cnn", "digits", epochs=2, seed=1, checkpoint_dir=tmp_path, verbose=False, progress=False)
    _corrupt(tmp_path / "2")
    m = models.build("small_cnn", seed=5)
    opt = training.make_optimizer(m, 1e-3)
    meta = dict(model="small_cnn", data="digits", scale="small", batch=64, dtype="float32", lr=1e-3, seed=1)
    with pytest.raises(checkpoint.CheckpointError, match=r"checkpoint of epoch 2 .* cannot be read"):
        checkpoint.restore(tmp_path, m, opt, meta, fallback=False)
    with pytest.warns(checkpoint.CheckpointWarning, match="damaged checkpoint skipped: epoch 2"):
        assert checkpoint.restore(tmp_path, m, opt, meta) == 1
    _corrupt(tmp_path / "1")
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint in .* can be read"):
        checkpoint.restore(tmp_path, m, opt, meta)
