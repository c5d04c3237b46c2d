"""Transfer-learning tools of notebook 05: augmented extractors, the converged probe, feature dimensionality,
re-estimated normalisation, the few-shot task, fine-tuning, cache savings and the sliding-window head."""
import numpy as np
import pytest
from flax import nnx

from course import data, extractor, transfer
from course.lessons import bottleneck_features as bf
from course.models.simple import SmallCNN


@pytest.fixture(scope="module")
def tiny():
    """A small random SmallCNN (4-8-16 channels, 3 classes)."""
    return SmallCNN(1, 3, channels=(4, 8, 16), rngs=nnx.Rngs(0))


# ----------------------------------------------------------------------------------------------------------
# Jitter and augmented extractors
def test_jitter_without_rotation_is_a_whole_pixel_shift():
    x = np.random.default_rng(0).random((6, 12, 12, 1), dtype=np.float32)
    got = extractor.jitter(x, np.random.default_rng(1), max_shift=2, max_angle=0.0)
    rng = np.random.default_rng(1)  # replay the same draws: angles first, then (dy, dx)
    rng.uniform(0, 0, 6)
    shifts = rng.integers(-2, 3, (6, 2))
    for i, (dy, dx) in enumerate(shifts):
        np.testing.assert_array_equal(got[i], data.shift_images(x[i:i + 1], int(dx), int(dy))[0])
    np.testing.assert_array_equal(extractor.jitter(x, np.random.default_rng(5), 0, 0.0), x)  # no jitter: identity


def test_jitter_is_seeded_and_rotates():
    x = data.digits(canvas=16).x_train[:20]
    a = extractor.jitter(x, np.random.default_rng(3), 2, 15.0)
    b = extractor.jitter(x, np.random.default_rng(3), 2, 15.0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, extractor.jitter(x, np.random.default_rng(4), 2, 15.0))
    rotated = extractor.jitter(x, np.random.default_rng(0), 0, 15.0)
    np.testing.assert_allclose(rotated.sum(axis=(1, 2, 3)), x.sum(axis=(1, 2, 3)), rtol=0.05)  # ink kept
    assert not np.array_equal(rotated, x)
    with pytest.raises(ValueError, match=r"\(N, H, W, 1\)"):
        extractor.jitter(x[..., 0], np.random.default_rng(0))


def test_augmented_config_names_keys_and_training_set():
    plain = extractor.ExtractorConfig()
    aug = extractor.ExtractorConfig(max_shift=2, max_angle=15.0, copies=4)
    assert plain.name == "small_cnn-digits16-base01234" and not plain.augmented
    assert aug.name == "small_cnn-digits16-base01234-jitter2px15degx4" and aug.augmented
    assert extractor.ExtractorConfig(seed=3).name.endswith("-seed3")  # seeds do not overwrite each other
    assert len({plain.key(), aug.key(), extractor.ExtractorConfig(seed=3).key()}) == 3
    x, y = aug.training_images()
    x0, y0 = plain.training_images()
    assert x.shape == (4 * len(x0), 16, 16, 1) and np.array_equal(y, np.tile(y0, 4))
    np.testing.assert_array_equal(x, aug.training_images()[0])  # the augmented set is a function of the config
    assert not np.array_equal(x[:len(x0)], x0)
    with pytest.raises(ValueError, match="copies >= 1"):
        extractor.ExtractorConfig(copies=0)


# ----------------------------------------------------------------------------------------------------------
# Converged probe and feature dimensionality
def _blobs(seed, n=200, d=8):
    """Three Gaussian blobs with fixed centres; ``seed`` draws the points."""
    centres = np.random.default_rng(100).normal(0, 3, (3, d))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    return centres[y] + rng.normal(0, 1, (n, d)), y


def test_converged_probe_separates_blobs_and_ignores_feature_scale():
    (x, y), (xt, yt) = _blobs(0), _blobs(1)
    acc = transfer.converged_probe(x, y, xt, yt)
    assert acc > 0.95
    # the features of a ReLU network: a big common offset, tiny spreads; the standardisation makes it irrelevant
    assert transfer.converged_probe(x * 1e-3 + 50, y, xt * 1e-3 + 50, yt) == pytest.approx(acc, abs=1e-9)
    with pytest.raises(ValueError, match="differ in length"):
        transfer.converged_probe(x, y[:-1], xt, yt)


def test_participation_ratio_matches_hand_computed_spectra():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 20000))
    # features [a, a, b, 0]: correlation eigenvalues (2, 1, 0) over the 3 live features -> PR = 3^2 / 5 = 1.8
    f = np.stack([a, a, b, np.zeros_like(a)], axis=1)
    assert transfer.dead_units(f) == 1
    np.testing.assert_allclose(transfer.correlation_spectrum(f), [2, 1, 0], atol=0.03)
    assert transfer.participation_ratio(f) == pytest.approx(1.8, abs=0.02)
    iso = rng.normal(size=(20000, 10)) * rng.uniform(0.1, 10, 10)  # scales do not matter: correlation
    assert transfer.participation_ratio(iso) == pytest.approx(10, rel=0.01)
    with pytest.raises(ValueError, match="at least 2"):
        transfer.correlation_spectrum(np.stack([a, np.zeros_like(a)], 1))


def test_restandardised_uses_the_new_statistics_and_keeps_the_weights():
    f = np.random.default_rng(0).normal(3, 2, (64, 4)).astype(np.float32)
    probe = transfer.LinearProbe(4, 2, seed=1)
    new = transfer.restandardised(probe, f * 5 + 7)
    new.eval()
    z = (f - f.mean(0)) / np.sqrt(f.var(0) + new.norm.epsilon)  # (f*5+7) standardised = f standardised
    ref = z @ np.asarray(probe.linear.kernel[...]) + np.asarray(probe.linear.bias[...])
    np.testing.assert_allclose(np.asarray(new(f * 5 + 7)), ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(probe.norm.mean[...]), 0)  # the original is left alone


# ----------------------------------------------------------------------------------------------------------
# Few-shot task and fine-tuning
def test_kshot_draws_k_distinct_examples_of_every_class():
    y = np.repeat(np.arange(5), 30)
    idx = bf.kshot(y, 4, seed=2)
    assert len(idx) == len(set(idx)) == 20 and np.array_equal(np.bincount(y[idx]), [4] * 5)
    np.testing.assert_array_equal(idx, bf.kshot(y, 4, seed=2))
    assert not np.array_equal(idx, bf.kshot(y, 4, seed=3))
    with pytest.raises(ValueError, match="fewer than k=31"):
        bf.kshot(y, 31, seed=0)


def test_jittered_target_keeps_labels_and_grows_the_test_set():
    new = extractor.ExtractorConfig().new_dataset()
    task = bf.jittered_target(new, seed=0, test_copies=3)
    assert task.x_train.shape == new.x_train.shape and np.array_equal(task.y_train, new.y_train)
    assert task.x_test.shape == (3 * len(new.x_test), 16, 16, 1)
    np.testing.assert_array_equal(task.y_test, np.tile(new.y_test, 3))
    np.testing.assert_array_equal(task.x_test, bf.jittered_target(new, seed=0, test_copies=3).x_test)


def test_finetune_with_zero_pretrained_lr_moves_only_the_head(tiny):
    x = np.random.default_rng(0).random((12, 16, 16, 1), dtype=np.float32)
    y = np.arange(12) % 3
    tx = transfer.finetune_tx()
    frozen = bf.finetune(tiny, x, y, tx, lr_head=1e-2, lr_pretrained=0.0, steps=3, seed=0)
    np.testing.assert_array_equal(np.asarray(frozen.conv1.kernel[...]), np.asarray(tiny.conv1.kernel[...]))
    moved = bf.finetune(tiny, x, y, tx, lr_head=1e-2, lr_pretrained=1e-2, steps=3, seed=0)
    assert not np.array_equal(np.asarray(moved.conv1.kernel[...]), np.asarray(tiny.conv1.kernel[...]))
    assert not np.array_equal(np.asarray(frozen.head.linear.kernel[...]),
                              np.asarray(transfer.LinearProbe(16, 3, seed=0).linear.kernel[...]))


# ----------------------------------------------------------------------------------------------------------
# Cache savings and the sliding window
def test_cache_saving_is_two_flops_per_mac():
    assert bf.cache_saving(10 ** 9, 1000, 2e12) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="positive"):
        bf.cache_saving(1, 1, 0)


def test_score_map_of_a_16x16_image_is_the_networks_own_output(tiny):
    x = np.random.default_rng(0).random((2, 16, 16, 1), dtype=np.float32)
    probe = transfer.LinearProbe(16, 3, seed=0)
    probe.eval()
    ref = np.asarray(probe(tiny.intermediates(x)[1]["gap"]))  # (2, 3)
    np.testing.assert_allclose(bf.class_score_map(tiny, probe, x)[:, 0, 0], ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bf.window_scores(tiny, probe, x)[:, 0, 0], ref, rtol=1e-5, atol=1e-5)
    big = np.random.default_rng(1).random((1, 24, 40, 1), dtype=np.float32)
    assert bf.class_score_map(tiny, probe, big).shape == bf.window_scores(tiny, probe, big).shape == (1, 3, 7, 3)
