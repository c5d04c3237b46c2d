"""Spatial transformer sampling and the attribution tools of notebook 01, against independent references."""
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from course import attribution, data
from course.models import stn
from course.models.simple import SmallCNN


@pytest.fixture(scope="module")
def digits():
    return data.digits(canvas=16).x_test[:4]


def test_identity_theta_reproduces_the_input(digits):
    theta = jnp.tile(jnp.array([[1.0, 0, 0], [0, 1, 0]]), (4, 1, 1))
    out = stn.bilinear_sample(jnp.asarray(digits), stn.affine_grid(theta, 16, 16))
    np.testing.assert_allclose(out, digits, atol=1e-6)


def test_rotation_theta_matches_scipy_rotate(digits):
    out = stn.bilinear_sample(jnp.asarray(digits), stn.affine_grid(stn.rotation_theta(jnp.full(4, 30.0)), 16, 16))
    np.testing.assert_allclose(out, data.rotate_images(digits, 30), atol=1e-4)


def test_translation_theta_shifts_by_whole_pixels(digits):
    # x_in = x_out + t: t = -2/16 * 2 in normalised units samples 2 pixels to the left, i.e. shifts right by 2
    theta = jnp.tile(jnp.array([[1.0, 0, -0.25], [0, 1, 0]]), (4, 1, 1))
    out = stn.bilinear_sample(jnp.asarray(digits), stn.affine_grid(theta, 16, 16))
    np.testing.assert_allclose(out, data.shift_images(digits, 2, 0), atol=1e-5)


def test_stn_starts_as_identity(digits):
    model = stn.SpatialTransformer(1, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(model(jnp.asarray(digits)), digits, atol=1e-6)


def test_receptive_fields_match_the_hand_derivation():
    cnn = SmallCNN(1, 10, rngs=nnx.Rngs(0))
    for name, size in [("conv1", 3), ("conv2", 8), ("conv3", 18)]:  # 3; +1 -> 4; +2*2 -> 8; +1*2 -> 10; +2*4 -> 18
        rs, cs = attribution.receptive_field(lambda x: cnn.intermediates(x)[1][name], (64, 64, 1), 5, 5)
        assert rs.stop - rs.start == size and cs.stop - cs.start == size, name


def test_occlusion_map_of_a_model_that_reads_one_pixel():
    # "probability" of class 0 = the value of pixel (2, 3): only squares covering it change the output
    prob = lambda x: jnp.stack([x[:, 2, 3, 0], 1 - x[:, 2, 3, 0]], -1)  # noqa: E731
    img = np.ones((6, 6, 1), np.float32)
    heat = attribution.occlusion_map(prob, img, 0, patch=2, stride=1, fill=0.0)
    expected = np.zeros((5, 5))
    expected[1:3, 2:4] = 1.0  # top-left corners (r, c) with r in {1, 2} and c in {2, 3} cover (2, 3)
    np.testing.assert_allclose(heat, expected)


def test_top_activations_and_crops():
    acts = np.zeros((3, 2, 2, 1))
    acts[0, 1, 0, 0], acts[2, 0, 1, 0], acts[1, 1, 1, 0] = 5, 9, 1
    assert attribution.top_activations(acts, 0, 2) == [(2, 0, 1), (0, 1, 0)]
    images = np.arange(3 * 4 * 4, dtype=np.float32).reshape(3, 4, 4, 1)
    crops = attribution.crop_patches(images, [(1, 0, 0)], lambda r, c: (slice(r, r + 2), slice(c, c + 2)), 2)
    np.testing.assert_array_equal(crops[0, ..., 0], images[1, :2, :2, 0])
