"""Notebook 01's pieces against references known by construction: scattered and permuted digits, the locally
connected layer (vs a convolution with the same filter everywhere), occlusion maps of models that read one region
only, and the per-layer measurements of course.lessons.why_convnets_work."""
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import pytest
from flax import nnx

from course import attribution, data, models
from course.lessons import why_convnets_work as lesson
from course.models.simple import LocallyConnected, LocallyConnectedNet, SmallCNN


# ---------------------------------------------------------------------------------------------- data
def test_scatter_places_every_image_unchanged_somewhere_and_is_seeded():
    imgs = np.random.default_rng(0).uniform(0.1, 1, (50, 8, 8, 1)).astype(np.float32)  # no zero pixel
    out = data.scatter_on_canvas(imgs, 20, seed=3)
    assert out.shape == (50, 20, 20, 1)
    tops = []
    for img, canvas in zip(imgs, out):
        rows, cols = np.nonzero(canvas[..., 0])
        t, l = rows.min(), cols.min()
        np.testing.assert_array_equal(canvas[t:t + 8, l:l + 8], img)
        assert np.count_nonzero(canvas) == 64  # nothing else on the canvas
        tops.append(t)
    assert 0 <= min(tops) and max(tops) <= 12 and len(set(tops)) > 5  # positions vary over the whole range
    np.testing.assert_array_equal(out, data.scatter_on_canvas(imgs, 20, seed=3))
    assert not np.array_equal(out, data.scatter_on_canvas(imgs, 20, seed=4))
    with pytest.raises(ValueError, match="canvas=6 is smaller"):
        data.scatter_on_canvas(imgs, 6, seed=0)


def test_scattered_digits_keep_the_fixed_split_and_labels():
    d8, ds = data.digits(8), data.scattered_digits(20, seed=1)
    np.testing.assert_array_equal(ds.y_train, d8.y_train)
    np.testing.assert_allclose(ds.x_train.sum(axis=(1, 2, 3)), d8.x_train.sum(axis=(1, 2, 3)), rtol=1e-5)
    assert ds.input_shape == (20, 20, 1)


def test_permute_pixels_is_one_permutation_for_all_images_and_an_mlp_cannot_tell():
    x = np.random.default_rng(0).uniform(size=(4, 6, 6, 1)).astype(np.float32)
    xp = data.permute_pixels(x, seed=2)
    np.testing.assert_array_equal(np.sort(xp.reshape(4, -1), 1), np.sort(x.reshape(4, -1), 1))
    assert not np.array_equal(xp, x)
    perm = np.random.default_rng(2).permutation(36)
    np.testing.assert_array_equal(xp.reshape(4, 36)[:, :], x.reshape(4, 36)[:, perm])  # same order for all
    mlp = models.build("mlp", seed=0, input_shape=(6, 6, 1))
    twin = models.build("mlp", seed=0, input_shape=(6, 6, 1))
    twin.layers[0].kernel[...] = mlp.layers[0].kernel[...][np.argsort(perm)]
    np.testing.assert_allclose(twin(jnp.asarray(x)), mlp(jnp.asarray(xp)), atol=1e-5)


# ---------------------------------------------------------------------------------------------- models
def test_locally_connected_with_one_filter_everywhere_is_a_convolution():
    conv = nnx.Conv(2, 3, kernel_size=(3, 3), padding="SAME", rngs=nnx.Rngs(1))
    lc = LocallyConnected(6, 5, 2, 3, rngs=nnx.Rngs(0))
    k = jnp.transpose(conv.kernel[...], (2, 0, 1, 3)).reshape(18, 3)  # (kh, kw, C_in, C_out) -> (C_in*kh*kw, C_out)
    lc.kernel[...] = jnp.broadcast_to(k, (6, 5, 18, 3))
    lc.bias[...] = jnp.broadcast_to(conv.bias[...], (6, 5, 3))
    x = jax.random.normal(jax.random.key(0), (2, 6, 5, 2))
    np.testing.assert_allclose(lc(x), conv(x), atol=1e-5)
    ref = jax.lax.conv_general_dilated_patches(x, (3, 3), (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_array_equal(lc.patches(x), ref)


def test_locally_connected_weights_are_per_position():
    lc = LocallyConnected(4, 4, 1, 1, rngs=nnx.Rngs(0))
    lc.kernel[...] = jnp.zeros_like(lc.kernel[...]).at[1, 2, 4, 0].set(1.0)  # centre tap of position (1, 2) only
    x = jax.random.uniform(jax.random.key(1), (1, 4, 4, 1))
    y = np.asarray(lc(x))[0, ..., 0]
    expected = np.zeros((4, 4))
    expected[1, 2] = float(x[0, 1, 2, 0])
    np.testing.assert_allclose(y, expected, atol=1e-7)
    assert sum(v.size for v in jax.tree.leaves(nnx.state(lc, nnx.Param))) == 4 * 4 * 1 * (9 * 1 + 1)
    with pytest.raises(ValueError, match="built for 4x4 inputs"):
        lc(jnp.zeros((1, 5, 5, 1)))


def test_locally_connected_net_is_the_small_cnn_without_sharing():
    net = models.build("locally_connected", input_shape=(20, 20, 1))
    assert net(jnp.zeros((3, 20, 20, 1))).shape == (3, 10)
    assert isinstance(net, LocallyConnectedNet)
    n_params = sum(v.size for v in jax.tree.leaves(nnx.state(net, nnx.Param)))
    expected = (20 * 20 * 16 * (9 + 1) + 10 * 10 * 32 * (9 * 16 + 1) + 5 * 5 * 64 * (9 * 32 + 1) + 64 * 10 + 10)
    assert n_params == expected
    with pytest.raises(ValueError, match="multiples of 4"):
        LocallyConnectedNet(18, 18, rngs=nnx.Rngs(0))


# ---------------------------------------------------------------------------------------------- occlusion
class ReadsOneRegion(nnx.Module):
    """Two-class logits [0.3 * sum of x over R, 0] where R is rows 5..7, columns 9..11 of a 12x16 image: by
    construction, only squares that overlap R can change its output."""

    def __init__(self):
        mask = np.zeros((12, 16, 1), np.float32)
        mask[5:8, 9:12] = 1.0
        self.w = nnx.Param(jnp.asarray(mask * 0.3))  # small: the softmax stays far from saturation

    def __call__(self, x):
        s = (x * self.w[...]).sum(axis=(1, 2, 3))
        return jnp.stack([s, jnp.zeros_like(s)], -1)


def test_occlusion_map_finds_the_region_the_model_reads_and_nothing_else():
    model = ReadsOneRegion()
    img = np.random.default_rng(0).uniform(0, 1, (12, 16, 1)).astype(np.float32)
    patch = 3
    heat = attribution.occlusion_map(lambda v: jax.nn.softmax(model(v)), img, 0, patch=patch, fill=0.5)
    assert heat.shape == (12 - patch + 1, 16 - patch + 1)
    # independent reference: p(0) = sigmoid(0.3 * sum over R), recomputed with numpy for every square
    p = lambda im: 1 / (1 + np.exp(-0.3 * im[5:8, 9:12].sum()))  # noqa: E731
    expected = np.zeros_like(heat)
    for t in range(heat.shape[0]):
        for l in range(heat.shape[1]):
            covered = img.copy()
            covered[t:t + patch, l:l + patch] = 0.5
            expected[t, l] = p(img) - p(covered)
    np.testing.assert_allclose(heat, expected, atol=1e-5)
    overlaps = np.zeros(heat.shape, bool)
    overlaps[5 - patch + 1:8, 9 - patch + 1:12] = True  # top-left corners whose square meets R
    assert np.all(np.abs(heat[~overlaps]) < 1e-7) and np.all(np.abs(heat[overlaps]) > 1e-4)
    # spread back onto pixels, the map is non-zero only within patch-1 pixels of R
    pix = lesson.per_pixel(heat, patch, (12, 16))
    near = np.zeros((12, 16), bool)
    near[5 - patch + 1:8 + patch - 1, 9 - patch + 1:12 + patch - 1] = True
    assert np.all(np.abs(pix[~near]) < 1e-7) and np.abs(pix[5:8, 9:12]).min() > 0


def test_occlusion_with_the_background_colour_cannot_see_the_background():
    model = ReadsOneRegion()
    img = np.zeros((12, 16, 1), np.float32)
    img[5:8, 9:12] = 1.0
    black = attribution.occlusion_map(lambda v: jax.nn.softmax(model(v)), img, 0, patch=3, fill=0.0)
    grey = attribution.occlusion_map(lambda v: jax.nn.softmax(model(v)), img, 0, patch=3, fill=0.5)
    ink = lesson.covers_ink(img, 3)
    assert np.all(black[~ink] == 0) and np.all(black[ink] > 0)
    assert np.all(grey[ink] > 0)  # grey over the region lowers the region's sum: covering ink hurts


def test_occlusion_map_rejects_a_batch():
    with pytest.raises(ValueError, match="one \\(H, W, C\\) image"):
        attribution.occlusion_map(lambda v: v, np.zeros((2, 8, 8, 1)), 0)


def test_covers_ink_and_per_pixel_by_hand():
    img = np.zeros((5, 5, 1), np.float32)
    img[0, 0] = 1.0
    cover = lesson.covers_ink(img, 2)
    expected = np.zeros((4, 4), bool)
    expected[0, 0] = True
    np.testing.assert_array_equal(cover, expected)
    heat = np.zeros((4, 4))
    heat[0, 0] = 4.0
    pix = lesson.per_pixel(heat, 2, (5, 5))
    # pixel (0, 0) is covered by 1 square (the one with drop 4), (1, 1) by 4 squares of which one has drop 4
    assert pix[0, 0] == 4.0 and pix[1, 1] == 1.0 and pix[0, 1] == 2.0 and pix[4, 4] == 0.0
    np.testing.assert_allclose(lesson.per_pixel(np.full((4, 4), 0.3), 2, (5, 5)), 0.3)


def test_occlusion_study_keeps_only_correctly_classified_images():
    model = ReadsOneRegion()
    x = np.zeros((4, 12, 16, 1), np.float32)
    x[:2, 5:8, 9:12] = 1.0  # class 0 (positive logit) for the first two
    x[2:, 5:8, 9:12] = -1.0  # class 1 for the others
    study = lesson.occlusion_study(model, x, np.array([0, 1, 1, 0]), patch=3)
    np.testing.assert_array_equal(study["index"], [0, 2])
    assert study["heat"].shape == (2, 10, 14)
    assert study["ink"][0] > 0 and study["background"][0] == pytest.approx(0, abs=1e-7)


# ---------------------------------------------------------------------------------------------- depth
def test_feature_distance_is_zero_for_the_same_image_and_positive_for_a_moved_one():
    cnn = SmallCNN(1, 10, rngs=nnx.Rngs(0))
    x = data.digits(canvas=16).x_test[:5]
    same = lesson.feature_distance(cnn, x, x)
    assert list(same) == list(lesson.STAGES) and all(v == 0 for v in same.values())
    moved = lesson.feature_distance(cnn, x, data.shift_images(x, 2, 0))
    assert moved["conv1"] > 0.5  # a shifted map differs from the original position by position


def test_label_purity_of_perfect_and_of_blind_detectors():
    labels = np.repeat(np.arange(3), 10)  # 30 images, 3 classes
    acts = np.zeros((30, 2, 2, 3))
    for c in range(3):
        acts[labels == c, 1, 1, c] = 1.0 + np.arange(10)  # channel c fires only for class c
    assert lesson.label_purity(acts, labels, k=9) == 1.0
    blind = np.random.default_rng(0).uniform(size=(3000, 1, 1, 50))
    many = np.random.default_rng(1).integers(0, 10, 3000)
    assert abs(lesson.label_purity(blind, many) - lesson.chance_purity(many)) < 0.05


# ---------------------------------------------------------------------------------------------- first-layer filters
def _kernels(*filters):
    """(3, 3) arrays -> (3, 3, 1, C)."""
    return np.stack(filters, axis=-1)[:, :, None, :].astype(np.float64)


def test_filter_parts_of_pure_patterns_known_by_construction():
    ones = np.ones((3, 3))
    sobel_x = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])  # Sobel: a ramp along x (edge runs vertically)
    ramp_y = np.array([[-1, -1, -1], [0, 0, 0], [1, 1, 1]])  # brightness grows downwards
    diag = np.array([[-2, -1, 0], [-1, 0, 1], [0, 1, 2]])  # ramp along x + y: 45 degrees (y points down)
    checker = np.array([[1, -1, 1], [-1, 1, -1], [1, -1, 1]]) - 1 / 9  # zero-mean, symmetric: no ramp in it
    p = lesson.filter_parts(_kernels(ones, sobel_x, ramp_y, diag, checker, 3 * ones + ramp_y))
    np.testing.assert_allclose(p["brightness"] + p["edge"] + p["rest"], 1, atol=1e-12)
    np.testing.assert_allclose(p["brightness"][:1], 1, atol=1e-12)
    # the Sobel filter is not a pure ramp (its middle row weighs 2): its edge part is its projection on the ramp
    e = np.array([-1, 0, 1, -1, 0, 1, -1, 0, 1]) / np.sqrt(6)  # unit ramp along x, by hand
    np.testing.assert_allclose(p["edge"][1], (e @ sobel_x.ravel()) ** 2 / (sobel_x ** 2).sum(), atol=1e-12)
    np.testing.assert_allclose(p["edge"][2:4], 1, atol=1e-12)
    np.testing.assert_allclose(p["theta"][1:4], [0, 90, 45], atol=1e-9)
    np.testing.assert_allclose(p["rest"][4], 1, atol=1e-12)
    np.testing.assert_allclose(p["edge_share"][[2, 4, 5]], [1, 0, 1], atol=1e-12)
    np.testing.assert_allclose(p["brightness"][5], 81 / (81 + 6), atol=1e-12)  # 3 * ones: energy 81; ramp: 6


def test_filter_parts_of_random_filters_match_chance_and_scale_does_not_matter():
    w = np.random.default_rng(0).standard_normal((3, 3, 1, 20000))
    p, chance = lesson.filter_parts(w), lesson.chance_parts(3)
    for name in ("brightness", "edge", "rest"):
        assert abs(p[name].mean() - chance[name]) < 0.01, name
    np.testing.assert_allclose(chance["brightness"] + chance["edge"] + chance["rest"], 1)
    q = lesson.filter_parts(7.5 * w[..., :50])
    for name in ("brightness", "edge", "rest", "edge_share", "theta"):
        np.testing.assert_allclose(q[name], p[name][:50], atol=1e-9)
    with pytest.raises(ValueError, match=r"\(K, K, 1, C\)"):
        lesson.filter_parts(np.zeros((3, 3, 2, 4)))


def test_patch_parts_of_flat_and_of_ramp_images():
    flat = np.full((2, 6, 6, 1), 0.5)
    assert lesson.patch_parts(flat) == pytest.approx({"brightness": 1.0, "edge": 0.0, "rest": 0.0}, abs=1e-12)
    ramp = np.broadcast_to(np.arange(6.0)[None, None, :, None], (2, 6, 6, 1))  # every patch: constant + ramp
    p = lesson.patch_parts(ramp)
    # a patch starting at column a: constant a + 1 (energy 9 (a + 1)^2) plus a unit ramp (energy 6), a = 0..3
    assert p["rest"] == pytest.approx(0, abs=1e-12) and p["edge"] == pytest.approx(24 / (9 * 30 + 24))
    noise = np.random.default_rng(1).standard_normal((50, 10, 10, 1))
    assert lesson.patch_parts(noise)["rest"] == pytest.approx(6 / 9, abs=0.02)


def test_filters_figure_has_labelled_rows_and_shared_scales():
    rng = np.random.default_rng(0)
    k0, k1 = rng.standard_normal((3, 3, 1, 16)), rng.standard_normal((3, 3, 1, 16))
    fig = lesson.filters_figure(k0, k1, rng.uniform(size=(16, 16, 1)), rng.uniform(size=(16, 16, 16)))
    axes = fig.axes[:36]
    assert axes[1].images[0].get_clim() == axes[10].images[0].get_clim()  # initial and trained: one scale
    labels = [t.get_text() for ax in axes for t in ax.texts] + [ax.get_ylabel() for ax in axes]
    assert "initial" in labels and "trained" in labels and any("feature maps" in s for s in labels)
    sizes = [t.get_fontsize() for ax in fig.axes for t in ax.texts + [ax.title, ax.yaxis.label] if t.get_text()]
    assert min(sizes) >= 9
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- fewer examples
def test_fewer_examples_keeps_n_distinct_images_per_class_repeated_to_full_size():
    ds = data.digits(8)
    few = lesson.fewer_examples(ds, 30, seed=2)
    assert few.x_train.shape == ds.x_train.shape and few.x_test is ds.x_test
    distinct = np.unique(few.x_train.reshape(len(few.x_train), -1), axis=0)
    assert len(distinct) == 30
    np.testing.assert_array_equal(np.bincount(few.y_train[:30], minlength=10), 3)  # 3 of every class
    rows = {r.tobytes(): y for r, y in zip(ds.x_train.reshape(len(ds.x_train), -1), ds.y_train)}
    assert all(rows[r.tobytes()] == y for r, y in zip(few.x_train.reshape(len(few.x_train), -1), few.y_train))
    assert not np.array_equal(few.x_train[:30], lesson.fewer_examples(ds, 30, seed=3).x_train[:30])
    with pytest.raises(ValueError, match="multiple of the 10 classes"):
        lesson.fewer_examples(ds, 35, seed=0)
