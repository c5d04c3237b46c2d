"""course.integrity and every file the course writes and reads back through it: incremental weights and their label
space, a checkpoint folder's run.json (one run per folder), the CIFAR-10 reader's published digests."""
import hashlib
import json
import pickle
import warnings

import numpy as np
import pytest
from flax import nnx

from course import checkpoint, data, integrity, models, training
from course import incremental as inc
from course.models.simple import SmallCNN
from tests.test_foundation_data import write_fake_cifar


# ----------------------------------------------------------------------------------------------------------
# The layer itself
def test_manifest_names_the_missing_or_changed_file(tmp_path):
    (tmp_path / "a").write_bytes(b"alpha")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"beta")
    listed = integrity.write_manifest(tmp_path / "m.json", tmp_path, ["a", "sub/b"])
    assert listed == {"a": hashlib.sha256(b"alpha").hexdigest(), "sub/b": hashlib.sha256(b"beta").hexdigest()}
    assert integrity.verify(tmp_path / "m.json", tmp_path) == listed
    (tmp_path / "sub" / "b").write_bytes(b"betA")
    with pytest.raises(integrity.IntegrityError, match=r"sub/b changed since it was saved \(sha256 mismatch\); do X"):
        integrity.verify(tmp_path / "m.json", tmp_path, "do X")
    (tmp_path / "sub" / "b").unlink()
    with pytest.raises(integrity.IntegrityError, match=r"sub/b is missing") as e:
        integrity.verify(tmp_path / "m.json", tmp_path)
    assert e.value.problem == "missing" and e.value.path == tmp_path / "sub" / "b"
    (tmp_path / "m.json").write_text("[1, 2]")
    with pytest.raises(integrity.IntegrityError, match="is not a sha256 manifest"):
        integrity.verify(tmp_path / "m.json", tmp_path)


@pytest.mark.parametrize("content, what", [(None, "is missing"), ("", "is empty"), ("{oops", "is not valid JSON")])
def test_read_json_names_the_file_and_the_fix(tmp_path, content, what):
    path = tmp_path / "x.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(integrity.IntegrityError, match=f"x.json {what}.*; write it again"):
        integrity.read_json(path, "write it again")


def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "f.json"
    integrity.write_json(path, {"v": 1})

    def half_then_crash(f):
        f.write(b'{"v": 2')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        integrity.atomic_write(path, half_then_crash)
    assert json.loads(path.read_text()) == {"v": 1} and [p.name for p in tmp_path.iterdir()] == ["f.json"]


# ----------------------------------------------------------------------------------------------------------
# Incremental weights and their label space (notebook 06)
def _saved(tmp_path):
    model = SmallCNN(1, 5, channels=(4, 8, 8), rngs=nnx.Rngs(0))
    directory = inc.save_weights(tmp_path / "m", model, list("abcde"))
    build = lambda n: SmallCNN(1, n, channels=(4, 8, 8), rngs=nnx.Rngs(7))  # noqa: E731
    return directory, build


def _biggest_weight_file(directory):
    return max((f for f in (directory / "weights").rglob("*") if f.is_file()), key=lambda f: f.stat().st_size)


def test_a_flipped_byte_in_saved_weights_is_named_not_loaded(tmp_path):
    """Without the manifest this loads silently, one parameter different (Orbax keeps no checksum)."""
    directory, build = _saved(tmp_path)
    inc.load_weights(directory, build)  # intact: loads
    f = _biggest_weight_file(directory)
    raw = bytearray(f.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    f.write_bytes(bytes(raw))
    with pytest.raises(integrity.IntegrityError, match=rf"{f.name} changed since it was saved.*save_weights"):
        inc.load_weights(directory, build)


def test_truncated_weights_and_a_broken_label_file_are_named(tmp_path):
    directory, build = _saved(tmp_path)
    f = _biggest_weight_file(directory)
    f.write_bytes(f.read_bytes()[:10])
    with pytest.raises(integrity.IntegrityError, match=rf"{f.name} changed since it was saved"):
        inc.load_weights(directory, build)
    directory, build = _saved(tmp_path)  # saved again: intact
    (directory / "classes.json").write_text('{"classes": ["a", "b"')
    with pytest.raises(integrity.IntegrityError, match=r"classes.json changed since it was saved"):
        inc.saved_classes(directory)
    directory, build = _saved(tmp_path)
    (directory / "sha256.json").unlink()
    with pytest.raises(integrity.IntegrityError, match=r"sha256.json is missing.*save the model again"):
        inc.load_weights(directory, build)


# ----------------------------------------------------------------------------------------------------------
# A checkpoint folder holds one run; run.json written once, a missing or damaged one named
META = {"model": "small_cnn", "lr": 0.001}


def _one_checkpoint(directory, meta=META):
    m = models.build("small_cnn", seed=0)
    opt = training.make_optimizer(m, 1e-3)
    checkpoint.start(directory, meta)
    checkpoint.save(directory, 1, m, opt)
    return m, opt


def test_a_folder_holding_a_run_is_refused_unless_overwritten(tmp_path):
    m, opt = _one_checkpoint(tmp_path)
    with pytest.raises(checkpoint.CheckpointError,
                       match=rf"{tmp_path} already holds the checkpoints of a run \(up to epoch 1: lr=0.001, "
                             r"model=small_cnn\); pass --resume .* another --checkpoint-dir, or pass --overwrite"):
        checkpoint.start(tmp_path, {**META, "lr": 0.01})
    assert json.loads((tmp_path / "run.json").read_text()) == META  # untouched
    (tmp_path / "notes.txt").write_text("mine")
    checkpoint.start(tmp_path, {**META, "lr": 0.01}, overwrite=True)
    assert checkpoint.latest_epoch(tmp_path) is None and (tmp_path / "notes.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "run.json"]
    with pytest.raises(checkpoint.CheckpointError, match="call checkpoint.start"):
        checkpoint.save(tmp_path / "elsewhere", 1, m, opt)


@pytest.mark.parametrize("damage, what", [("missing", "run.json is missing"), ("empty", "run.json is empty"),
                                          ("garbage", "run.json is not valid JSON")])
def test_a_missing_or_damaged_run_json_is_named_with_what_to_do(tmp_path, damage, what):
    m, opt = _one_checkpoint(tmp_path)
    path = tmp_path / "run.json"
    if damage == "missing":
        path.unlink()
    else:
        path.write_text("" if damage == "empty" else "{nope")
    with pytest.raises(integrity.IntegrityError, match=rf"{what}.*another --checkpoint-dir, or pass --overwrite"):
        checkpoint.restore(tmp_path, m, opt, META)


def test_an_edited_run_json_voids_the_checkpoints_it_described(tmp_path):
    m, opt = _one_checkpoint(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps(META, indent=2))  # same run, other bytes: still refused
    with pytest.raises(checkpoint.CheckpointError, match=r"run.json changed since it was saved"):
        checkpoint.restore(tmp_path, m, opt, META)


# ----------------------------------------------------------------------------------------------------------
# CIFAR-10: the published MD5 of each standard batch
def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_cifar_batches_are_checked_against_their_published_md5(tmp_path, monkeypatch):
    assert data.CIFAR10_MD5["data_batch_1"] == "c99cafc152244af753f735de768cd75f"  # torchvision's, the archive's
    root = write_fake_cifar(tmp_path / "c")
    with pytest.warns(data.DatasetWarning, match="MD5 of data_batch_1, .*test_batch differs from the published"):
        data.load_cifar10(root)
    monkeypatch.setattr(data, "CIFAR10_MD5", {f: _md5(root / f) for f in data.CIFAR10_FILES})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data.load_cifar10(root)  # all "published": no warning
    with open(root / "data_batch_4", "wb") as f:  # readable, but not the published file
        pickle.dump({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 3]}, f)
    with pytest.warns(data.DatasetWarning, match=r"the MD5 of data_batch_4 differs") as record:
        ds = data.load_cifar10(root)
    assert len(record) == 1 and ds.x_train.shape == (20, 32, 32, 3)
