"""Bottleneck-feature cache, trained-extractor cache, and per-parameter learning rates (notebook 05)."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from course import extractor, features, integrity, transfer
from course.models.simple import SmallCNN
from course.training import fit


@pytest.fixture(scope="module")
def tiny():
    """A small random SmallCNN (4-8-16 channels, 3 classes) and 40 random 16x16 images."""
    model = SmallCNN(1, 3, channels=(4, 8, 16), rngs=nnx.Rngs(0))
    x = np.random.default_rng(0).random((40, 16, 16, 1), dtype=np.float32)
    return model, x


def _statuses(model, x, tmp_path, **kw):
    return features.cached_features(model, x, directory=tmp_path, verbose=False, **kw).status


# ----------------------------------------------------------------------------------------------------------
# Feature cache
def test_features_equal_an_independent_forward_pass(tiny, tmp_path):
    model, x = tiny
    got = features.cached_features(model, x, directory=tmp_path, verbose=False)
    # reference: the conv3 activations averaged over the 4x4 positions, computed in one un-jitted call
    ref = np.asarray(model.intermediates(jnp.asarray(x))[1]["conv3"].mean(axis=(1, 2)))
    assert got.features.shape == (40, 16)
    np.testing.assert_allclose(got.features, ref, rtol=1e-5, atol=1e-6)
    hit = features.cached_features(model, x, directory=tmp_path, verbose=False)
    assert (got.status, hit.status) == ("miss", "hit")
    np.testing.assert_array_equal(hit.features, got.features)  # from disk, bit for bit
    np.testing.assert_allclose(hit.features, features.extract(model, x), rtol=1e-6, atol=1e-7)


def test_changing_weights_data_or_preprocessing_misses(tiny, tmp_path):
    model, x = tiny
    assert _statuses(model, x, tmp_path) == "miss"
    assert _statuses(model, x.copy(), tmp_path) == "hit"  # same values in another array: hit
    x2 = x.copy()
    x2[0, 0, 0, 0] += 0.01  # one pixel of one image
    assert _statuses(model, x2, tmp_path) == "miss"
    assert _statuses(model, x, tmp_path, preprocess=features.Preprocess(mean=0.5)) == "miss"
    assert _statuses(model, x, tmp_path, preprocess=features.Preprocess(mean=0.5)) == "hit"
    assert _statuses(model, x, tmp_path, preprocess=features.Preprocess(size=32)) == "miss"
    assert _statuses(model, x, tmp_path, layer="pool2") == "miss"
    changed = nnx.clone(model)
    changed.conv1.kernel[...] = changed.conv1.kernel[...] + 1e-3  # one layer's weights
    assert _statuses(changed, x, tmp_path) == "miss"
    assert _statuses(model, x, tmp_path) == "hit"  # the original entry is still there
    assert len(list(tmp_path.glob("*.npz"))) == 6


def test_hashes_see_shape_dtype_and_every_variable(tiny):
    model, x = tiny
    assert features.array_hash(x) == features.array_hash(x.copy())
    assert features.array_hash(x) != features.array_hash(x.reshape(40, 16, 16))
    assert features.array_hash(x) != features.array_hash(x.astype(np.float64))
    other = nnx.clone(model)
    other.head.bias[...] = other.head.bias[...].at[0].add(1.0)  # even the unused head changes the weights hash
    assert features.weights_hash(model) == features.weights_hash(nnx.clone(model))
    assert features.weights_hash(model) != features.weights_hash(other)


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "garbage_manifest", "delete_npz"])
def test_corrupt_feature_cache_is_detected_and_rebuilt(tiny, tmp_path, capsys, damage):
    model, x = tiny
    first = features.cached_features(model, x, name="train", directory=tmp_path, verbose=False)
    npz, manifest = first.path, first.path.with_suffix(".json")
    if damage == "flip_byte":
        raw = bytearray(npz.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        npz.write_bytes(bytes(raw))
    elif damage == "truncate":
        npz.write_bytes(npz.read_bytes()[:100])
    elif damage == "garbage_manifest":
        manifest.write_text("{not json")
    else:
        npz.unlink()
    again = features.cached_features(model, x, name="train", directory=tmp_path)
    out = capsys.readouterr().out
    assert again.status == "corrupt"
    assert "feature cache corrupt for 'train'" in out and "recomputed 40 x 16 features" in out
    np.testing.assert_array_equal(again.features, first.features)
    assert features.cached_features(model, x, name="train", directory=tmp_path, verbose=False).status == "hit"


def test_stale_feature_manifest_is_not_used(tiny, tmp_path):
    model, x = tiny
    first = features.cached_features(model, x, directory=tmp_path, verbose=False)
    manifest = first.path.with_suffix(".json")
    m = json.loads(manifest.read_text())
    m["key"] = "0" * 64
    manifest.write_text(json.dumps(m))
    assert _statuses(model, x, tmp_path) == "stale"
    assert _statuses(model, x, tmp_path) == "hit"


def test_random_augmentation_refuses_to_cache(tiny, tmp_path):
    model, x = tiny

    def flip(images):
        return images[:, :, ::-1] if np.random.rand() < 0.5 else images

    with pytest.raises(features.AugmentationNotCacheable, match="random draw"):
        features.cached_features(model, x, augment=flip, directory=tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_writes_are_atomic_and_leave_no_temporary_files(tiny, tmp_path):
    model, x = tiny
    features.cached_features(model, x, name="a b/c.d", directory=tmp_path, verbose=False)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and not any(n.startswith(".") for n in names)  # the npz and its manifest only
    assert all(n.startswith("a_b_c_d-") for n in names)
    manifest = json.loads(next(tmp_path.glob("*.json")).read_text())
    npz = next(tmp_path.glob("*.npz"))
    assert manifest["sha256"] == {npz.name: integrity.file_sha256(npz)}


def test_frozen_conv_part_runs_on_other_input_sizes(tiny):
    model, _ = tiny
    for size in (16, 24, 32):
        x = np.zeros((3, size, size, 1), np.float32)
        assert features.extract(model, x).shape == (3, 16)  # global average pool: 16 channels at any size
    x16 = np.random.default_rng(1).random((5, 16, 16, 1), dtype=np.float32)
    up = features.extract(model, x16, preprocess=features.Preprocess(size=32))
    ref = features.extract(model, np.asarray(jax.image.resize(x16, (5, 32, 32, 1), "bilinear")))
    np.testing.assert_allclose(up, ref, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# Extractor cache
TINY_CFG = extractor.ExtractorConfig(epochs=1, batch_size=64)


def test_extractor_miss_hit_stale_and_corrupt(tmp_path, capsys):
    first = extractor.load_extractor(TINY_CFG, directory=tmp_path)
    assert first.status == "miss" and "not in the cache; training it" in capsys.readouterr().out
    hit = extractor.load_extractor(TINY_CFG, directory=tmp_path)
    assert hit.status == "hit" and hit.weights_hash == first.weights_hash
    assert hit.base_accuracy == first.base_accuracy
    x = TINY_CFG.new_dataset().x_test[:8]
    np.testing.assert_array_equal(features.extract(hit.model, x), features.extract(first.model, x))

    # same entry name, another code version: the key differs -> stale -> retrained (deterministically)
    capsys.readouterr()
    orig = extractor.CODE_VERSION
    try:
        extractor.CODE_VERSION = orig + "-changed"
        stale = extractor.load_extractor(TINY_CFG, directory=tmp_path)
    finally:
        extractor.CODE_VERSION = orig
    assert stale.status == "stale" and "stale" in capsys.readouterr().out
    assert stale.weights_hash == first.weights_hash  # training is deterministic given the config

    # changing back is stale again (one slot per name); then damage the weights file
    assert extractor.load_extractor(TINY_CFG, directory=tmp_path, verbose=False).status == "stale"
    raw = bytearray(first.path.read_bytes())
    raw[-30] ^= 0x01
    first.path.write_bytes(bytes(raw))
    corrupt = extractor.load_extractor(TINY_CFG, directory=tmp_path)
    assert corrupt.status == "corrupt" and "CORRUPT" in capsys.readouterr().out
    assert corrupt.weights_hash == first.weights_hash
    assert extractor.load_extractor(TINY_CFG, directory=tmp_path, verbose=False).status == "hit"


def test_extractor_cache_honours_course_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    got = extractor.load_extractor(TINY_CFG, verbose=False)
    assert got.path == tmp_path / "extractors" / f"{TINY_CFG.name}.npz" and got.path.exists()


def test_extractor_config_keys_and_splits():
    cfg = extractor.ExtractorConfig()
    assert cfg.key() == extractor.ExtractorConfig().key()
    assert cfg.key() != extractor.ExtractorConfig(lr=1e-3).key()
    assert cfg.name == extractor.ExtractorConfig(lr=1e-3).name  # same slot: a changed config makes it stale
    assert cfg.new_classes == (5, 6, 7, 8, 9)
    base, new = cfg.base_dataset(), cfg.new_dataset()
    assert base.num_classes == new.num_classes == 5
    assert len(base.x_train) + len(new.x_train) + len(base.x_test) + len(new.x_test) == 1797
    with pytest.raises(ValueError, match="proper subset"):
        extractor.ExtractorConfig(base_classes=tuple(range(10)))


# ----------------------------------------------------------------------------------------------------------
# Transfer: per-parameter learning rates, probe with and without the cache
def test_multi_transform_gives_pretrained_part_the_smaller_step(tiny):
    model = transfer.with_new_head(tiny[0], 2, seed=1, probe=False)  # a plain Linear head: Params only
    x = np.random.default_rng(2).random((4, 16, 16, 1), dtype=np.float32)
    y = jnp.array([0, 1, 1, 0])

    def loss(m):
        return optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()

    before = features.flat_state(model)
    grads = nnx.grad(loss)(model)
    g = features.flat_state(grads)
    opt = nnx.Optimizer(model, transfer.finetune_tx(lr_head=0.1, lr_pretrained=0.01, make=optax.sgd), wrt=nnx.Param)
    opt.update(model, grads)
    after = features.flat_state(model)
    assert sorted(g) == sorted(before)
    for path in before:
        lr = 0.1 if path.startswith("head/") else 0.01  # SGD: new = old - lr * grad, by hand
        np.testing.assert_allclose(after[path], before[path] - lr * g[path], rtol=1e-5, atol=1e-7, err_msg=path)
        assert np.abs(g[path]).max() > 0, path  # every layer really got a gradient
    # lr 0 freezes the pretrained part exactly; the rates change in the state, the tx stays the same object
    transfer.set_learning_rates(opt, head=0.1, pretrained=0.0)
    opt.update(model, grads)
    final = features.flat_state(model)
    for path in before:
        if path.startswith("head/"):
            np.testing.assert_allclose(final[path], after[path] - 0.1 * g[path], rtol=1e-5, atol=1e-7)
        else:
            np.testing.assert_array_equal(final[path], after[path])


def test_param_labels_follow_state_paths(tiny):
    labels = transfer.param_labels(nnx.state(tiny[0], nnx.Param))
    by_layer = {str(path[0].key): label for path, label in jax.tree_util.tree_flatten_with_path(labels)[0]}
    assert by_layer == {"conv1": "pretrained", "conv2": "pretrained", "conv3": "pretrained", "head": "head"}


def test_probe_on_cached_features_equals_probe_recomputing_them(tiny, tmp_path):
    model, x = tiny
    y = np.arange(40, dtype=np.int32) % 3
    cached = features.cached_features(model, x, directory=tmp_path, verbose=False).features
    probe_a = transfer.LinearProbe(16, 3, seed=5)
    fit(probe_a, (cached, y), epochs=2, batch_size=8, lr=1e-2, verbose=False)
    frozen = transfer.FrozenFeatures(nnx.clone(model), transfer.LinearProbe(16, 3, seed=5))
    extractor_before = features.weights_hash(frozen.extractor)
    fit(frozen, (x, y), epochs=2, batch_size=8, optimizer=transfer.probe_optimizer(frozen, 1e-2), verbose=False)
    assert features.weights_hash(frozen.extractor) == extractor_before  # the frozen part did not move
    a, b = features.flat_state(probe_a), features.flat_state(frozen.probe)
    assert sorted(a) == ["linear/bias", "linear/kernel", "norm/mean", "norm/var"]
    for path in a:  # the same weights and the same running statistics
        np.testing.assert_allclose(a[path], b[path], rtol=1e-4, atol=1e-5, err_msg=path)
    assert transfer.count_params(frozen, "probe") == 16 * 3 + 3  # the normalisation trains nothing


def test_linear_probe_standardises_each_feature():
    rng = np.random.default_rng(3)
    f = (1.5 + 0.3 * rng.standard_normal((64, 4))).astype(np.float32)  # a common offset, small spreads
    probe = transfer.LinearProbe(4, 2)
    probe.train()
    z = np.asarray(probe.norm(jnp.asarray(f)))
    ref = (f - f.mean(0)) / np.sqrt(f.var(0) + 1e-5)  # BatchNorm's formula, epsilon 1e-5
    np.testing.assert_allclose(z, ref, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(np.asarray(probe.norm.mean[...]), 0.1 * f.mean(0), rtol=1e-5)  # momentum 0.9


def test_with_new_head_copies_the_body_and_leaves_the_model_alone(tiny):
    model = tiny[0]
    before = features.weights_hash(model)
    new = transfer.with_new_head(model, 7, seed=2)
    assert features.weights_hash(model) == before
    assert isinstance(new.head, transfer.LinearProbe) and new.head.linear.out_features == 7
    np.testing.assert_array_equal(np.asarray(new.conv2.kernel[...]), np.asarray(model.conv2.kernel[...]))
    assert new(jnp.zeros((2, 16, 16, 1))).shape == (2, 7)
    labels = jax.tree_util.tree_flatten_with_path(transfer.param_labels(nnx.state(new, nnx.Param)))[0]
    by_path = {"/".join(str(k.key) for k in p if hasattr(k, "key")): lab for p, lab in labels}
    assert by_path["head/linear/kernel"] == "head" and by_path["conv3/kernel"] == "pretrained"
