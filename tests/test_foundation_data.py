"""course.data: the embedded datasets, the generated shapes, batching, and the local CIFAR-10 reader."""
import pickle

import numpy as np
import pytest

from course import data


def test_digits_split_is_fixed_stratified_and_disjoint():
    a, b = data.digits(), data.digits()
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert a.x_train.shape == (1438, 8, 8, 1) and a.x_test.shape == (359, 8, 8, 1)
    assert a.x_train.dtype == np.float32 and 0 <= a.x_train.min() and a.x_train.max() <= 1
    assert set(np.unique(a.y_test)) == set(range(10))
    per_class = np.bincount(a.y_test) / np.bincount(np.concatenate([a.y_train, a.y_test]))
    assert np.all(np.abs(per_class - 0.2) < 0.02)
    train_rows = {r.tobytes() for r in a.x_train}
    assert sum(r.tobytes() in train_rows for r in a.x_test) < 5  # only true duplicates in the source data
    assert data.digits(seed=1).y_test.tolist() != a.y_test.tolist()


def test_digits_on_canvas_keeps_the_digit_in_the_middle():
    d8, d16 = data.digits(), data.digits(canvas=16)
    assert d16.x_train.shape[1:] == (16, 16, 1)
    np.testing.assert_array_equal(d16.x_train[:, 4:12, 4:12], d8.x_train)
    assert d16.x_train[:, :4].sum() == 0
    with pytest.raises(ValueError, match="canvas=4 is smaller"):
        data.digits(canvas=4)


def test_subset_relabels():
    d = data.digits().subset([5, 7], relabel=True)
    assert set(d.y_train) == {0, 1} and d.classes == ("5", "7")
    kept = data.digits().subset([5, 7])
    assert set(kept.y_train) == {5, 7} and kept.num_classes == 10


def test_shapes_are_seeded_and_controlled():
    x1, y1 = data.make_shapes(64, seed=3)
    x2, y2 = data.make_shapes(64, seed=3)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert x1.shape == (64, 16, 16, 1) and set(y1) <= set(range(8))
    bar = data.render_shape("bar", 16)
    assert bar[8].sum() > 10 and bar[:, 8].sum() < 4  # horizontal: wide in its row, thin in its column
    turned = data.render_shape("bar", 16, angle=90)
    np.testing.assert_allclose(turned, bar.T, atol=0.07)  # a quarter turn swaps rows and columns
    shifted = data.render_shape("square", 16, dx=3)
    assert np.argmax(shifted.sum(0)) > np.argmax(data.render_shape("square", 16).sum(0))
    with pytest.raises(ValueError, match="unknown shape 'hexagon'"):
        data.make_shapes(4, classes=("hexagon",))


def test_photos_are_offline_and_normalised():
    img = data.photo("astronaut", size=64)
    assert img.shape == (64, 64, 3) and img.dtype == np.float32 and 0 <= img.min() and img.max() <= 1
    assert data.photo("camera").shape[-1] == 3
    with pytest.raises(ValueError, match="unknown photo"):
        data.photo("mona_lisa")


def test_batches_cover_everything_once():
    x, y = np.arange(10)[:, None], np.arange(10)
    seen = np.concatenate([yb for _, yb in data.batches(x, y, 4, shuffle=True, seed=1)])
    assert sorted(seen) == list(range(10)) and seen.tolist() != list(range(10))
    assert [len(b) for _, b in data.batches(x, y, 4, drop_last=True)] == [4, 4]
    with pytest.raises(ValueError, match="10 examples but y has 3"):
        next(data.batches(x, y[:3], 4))


def test_shift_images_moves_pixels_and_fills_zeros():
    x = np.arange(1, 17, dtype=np.float32).reshape(1, 4, 4, 1)
    s = data.shift_images(x, dx=1, dy=-1)[0, ..., 0]
    expected = np.array([[0, 5, 6, 7], [0, 9, 10, 11], [0, 13, 14, 15], [0, 0, 0, 0]])
    np.testing.assert_array_equal(s, expected)


def test_rotate_images_quarter_turn():
    x = np.zeros((1, 5, 5, 1), np.float32)
    x[0, 0, 2] = 1  # top middle
    r = data.rotate_images(x, 90)[0, ..., 0]
    assert r[2, 0] == pytest.approx(1)  # counter-clockwise: top goes to the left


def write_fake_cifar(directory, n=4, corrupt=None):
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    for name in data.CIFAR10_FILES:
        d = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n))}
        with open(directory / name, "wb") as f:
            pickle.dump(d, f)
    return directory


@pytest.mark.filterwarnings("ignore::course.data.DatasetWarning")  # fake batches: not the published files
def test_cifar_reader_on_files_in_the_standard_format(tmp_path):
    root = write_fake_cifar(tmp_path / "cifar-10-batches-py")
    ds = data.load_cifar10(root)
    assert ds.x_train.shape == (20, 32, 32, 3) and ds.x_test.shape == (4, 32, 32, 3)
    with open(root / "data_batch_1", "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    # the pickle stores planes: 1024 red values, then green, then blue, each row-major
    pix = raw[b"data"][0]
    assert ds.x_train[0, 0, 1, 0] * 255 == pytest.approx(pix[1])
    assert ds.x_train[0, 1, 0, 2] * 255 == pytest.approx(pix[2048 + 32])
    assert ds.y_train[:4].tolist() == list(raw[b"labels"]) and ds.classes[0] == "airplane"


@pytest.mark.filterwarnings("ignore::course.data.DatasetWarning")  # fake batches: not the published files
def test_cifar_reader_errors_name_the_problem_and_the_fix(tmp_path):
    with pytest.raises(data.DatasetError, match="does not exist.*cifar-10-python.tar.gz"):
        data.load_cifar10(tmp_path / "nowhere")
    root = write_fake_cifar(tmp_path / "c")
    (root / "data_batch_3").unlink()
    with pytest.raises(data.DatasetError, match="lacks data_batch_3"):
        data.load_cifar10(root)
    root = write_fake_cifar(tmp_path / "d")
    (root / "test_batch").write_bytes(b"this is not a pickle")
    with pytest.raises(data.DatasetError, match="test_batch is not a CIFAR-10 python batch"):
        data.load_cifar10(root)
    root = write_fake_cifar(tmp_path / "e")
    with open(root / "data_batch_2", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(data.DatasetError, match=r"expected 'data' of shape \(N, 3072\)"):
        data.load_cifar10(root)
