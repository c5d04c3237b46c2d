"""Checks of notebook 01 (why convnets work): a function that builds augmented data, a derivation, a function
that reads an angle from an affine matrix, and parameter counts."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from course.exercises import Mistakes, count_hint, exercise, first_hint, mapping_hint


@exercise("01.1", "shifted_copies", inputs=("ds",))
def _shift_augmentation(shifted_copies, ds):
    n = len(ds.x_train)
    out = shifted_copies(0)
    for attr in ("x_train", "y_train", "x_test", "y_test"):
        if not hasattr(out, attr):
            return f"`shifted_copies(s)` should return a data.Dataset (it has no `{attr}`)"
    x, y = np.asarray(out.x_train), np.asarray(out.y_train)
    if len(x) != 2 * n or len(y) != 2 * n:
        return (f"`shifted_copies(0)` has {len(x)} training images: it should hold the {n} training digits and one "
                f"shifted copy of each")
    if not (np.array_equal(x[:n], ds.x_train) and np.array_equal(y, np.concatenate([ds.y_train, ds.y_train]))):
        return "put the original training digits first, then their copies in the same order, with the same labels"
    if not (np.array_equal(out.x_test, ds.x_test) and np.array_equal(out.y_test, ds.y_test)):
        return "leave the test set as it is: the curve measures accuracy on the same test digits"
    from course import data

    copies = x[n:]
    some = np.random.default_rng(0).choice(n, min(n, 300), replace=False)  # enough to catch a wrong move
    matched = np.zeros(len(some), bool)
    for dx in range(-3, 4):
        for dy in range(-3, 4):
            matched |= (data.shift_images(ds.x_train[some], dx, dy) == copies[some]).all(axis=(1, 2, 3))
    if not matched.all():
        return (f"{(~matched).mean():.0%} of the copies are not their digit moved by at most 3 whole pixels each "
                f"way (use data.shift_images)")
    unmoved = (copies == ds.x_train).all(axis=(1, 2, 3)).mean()
    if unmoved > 0.2:
        return f"{unmoved:.0%} of the copies are not moved at all: draw each digit's move from -3 ... 3 pixels"
    if np.array_equal(np.asarray(shifted_copies(1).x_train)[n:], copies):
        return "`shifted_copies(1)` gives the same copies as `shifted_copies(0)`: draw the moves from the seed s"
    return None


@exercise("01.2", "rf_conv2", "rf_conv3")
def _receptive_field(rf_conv2, rf_conv3):
    return first_hint(
        count_hint("rf_conv2", rf_conv2, 8, Mistakes(values={
            5: "the 2x2 pooling before conv2 doubles the stride: conv2 adds (3 - 1) x 2",
            7: "pool1 adds (2 - 1) x 1 pixel too",
            6: "pool1 adds (2 - 1) x 1 pixel, and doubles the stride that conv2 then multiplies by"})),
        count_hint("rf_conv3", rf_conv3, 18, Mistakes(values={
            7: "each layer adds (kernel - 1) x the current stride, and the stride doubles at each pooling",
            14: "the stride doubles at each pooling: after two of them it is 4",
            16: "each pooling adds (2 - 1) x the current stride too",
            26: "only the pools before conv3 change the stride it sees: two of them"})))


def rotation(degrees: np.ndarray) -> np.ndarray:
    """θ (B, 2, 3) of a counter-clockwise rotation, as course.models.stn.rotation_theta builds it (in numpy: no
    compilation in a check; tests/test_exercises.py checks the two agree)."""
    a = np.radians(degrees)
    c, s, z = np.cos(a), np.sin(a), np.zeros_like(a)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1)], -2).astype(np.float32)


@exercise("01.3", "predicted_angle")
def _angle(predicted_angle):
    angles = np.array([-150.0, -60.0, -30.0, 0.0, 20.0, 45.0, 120.0])
    theta = rotation(angles)
    got = np.asarray(predicted_angle(theta), dtype=float)
    if got.shape != angles.shape:
        return f"`predicted_angle` should return one angle per θ, shape {angles.shape}; got shape {got.shape}"
    if np.allclose(got, angles, atol=1e-2):
        scaled = np.asarray(predicted_angle(theta * 0.7), dtype=float)  # a learned θ need not be a pure rotation
        if np.allclose(scaled, angles, atol=1e-2):
            return None
        return ("right for a pure rotation, not for a θ that also scales (a learned one can): use the direction "
                "of the vector (θ[0, 0], θ[1, 0]), not arcsin or arccos of one entry")
    if np.allclose(got, np.radians(angles), atol=1e-3):
        return "your angles look like radians: return degrees"
    if np.allclose(got, -angles, atol=1e-2):
        return "your angles have the wrong sign: which entry of θ holds the sine, θ[1, 0] or θ[0, 1]?"
    inner = np.abs(angles) < 90
    if np.allclose(got[inner], angles[inner], atol=1e-2):
        return ("right within ±90° but not beyond: a one-argument inverse (atan of a ratio, arcsin) loses the "
                "quadrant; atan2 of the two entries keeps it")
    return "`predicted_angle(θ)` should give a for θ = rotation_theta(a), in degrees"


# parameters on 32x32x1 inputs, and the counts of the two other sizes the notebook uses: 16x16 (the digits) and
# each model's default input (the 20x20 canvas of locally_connected); from course.counting (tests/test_exercises.py)
PARAMS_32 = {"small_cnn": 23_946, "locally_connected": 2_536_074, "mlp": 66_250}
PARAMS_16 = {"small_cnn": 23_946, "locally_connected": 634_506, "mlp": 17_098}
PARAMS_DEFAULT = {"small_cnn": 23_946, "locally_connected": 1_426_826, "mlp": 17_098}


@exercise("01.4", "params_32")
def _any_size(params_32: Mapping):
    hint = mapping_hint("params_32", params_32, tuple(PARAMS_32))
    if hint:
        return hint
    for name, want in PARAMS_32.items():
        other = {c: "that is its count on another input size: build it with input_shape=(32, 32, 1)"
                 for c in (PARAMS_16[name], PARAMS_DEFAULT[name]) if c != want}
        hint = count_hint(f"params_32[{name!r}]", params_32[name], want, Mistakes(values=other))
        if hint:
            return hint
    return None
