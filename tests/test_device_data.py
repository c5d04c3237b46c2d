"""course.device_data: batches gathered or generated on the device, in the host pipeline's order."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from course import data, models, train_command, training
from course.device_data import DeviceData, SyntheticData, on_device, to_float


def test_device_batches_are_the_host_batches():
    ds = data.digits()
    source = DeviceData(ds.x_train, ds.y_train)
    host = list(data.batches(ds.x_train, ds.y_train, 64, shuffle=True, seed=7, drop_last=True))
    device = list(source.epoch(64, seed=7))
    assert len(device) == len(host) == len(ds.x_train) // 64
    for (hx, hy), (dx, dy) in zip(host, device):
        assert isinstance(dx, jax.Array)
        np.testing.assert_array_equal(np.asarray(dx), hx)
        np.testing.assert_array_equal(np.asarray(dy), hy)


def test_bytes_stay_bytes_on_the_device_and_arrive_as_floats():
    x = np.random.default_rng(0).integers(0, 256, (40, 4, 4, 3), dtype=np.uint8)
    y = np.arange(40) % 10
    source = DeviceData(x, y)
    assert source.x.dtype == np.uint8  # a quarter of the memory of float32
    xb, yb = next(source.epoch(8, seed=1))
    order = np.random.default_rng(1).permutation(40)[:8]
    np.testing.assert_allclose(np.asarray(xb), x[order].astype(np.float32) / 255.0, rtol=1e-6)
    assert xb.dtype == np.float32
    model = models.build("small_cnn", input_shape=(4, 4, 3))
    np.testing.assert_allclose(training.predict(model, x), training.predict(model, x.astype(np.float32) / 255),
                               rtol=1e-5, atol=1e-6)  # evaluation normalises bytes the same way


def test_synthetic_data_is_made_on_the_device_from_a_key():
    a = SyntheticData((224, 224, 3), 1000, n=4 * 16, seed=3, n_test=4)
    batches = list(a.epoch(16, seed=1))
    assert len(batches) == 4 and batches[0][0].shape == (16, 224, 224, 3) and batches[0][1].dtype == np.int32
    again = next(SyntheticData((224, 224, 3), 1000, n=64, seed=3, n_test=4).epoch(16, seed=1))
    np.testing.assert_array_equal(np.asarray(batches[0][0]), np.asarray(again[0]))  # the key decides
    assert not np.array_equal(np.asarray(batches[0][0]), np.asarray(batches[1][0]))  # each step its own
    assert 0 <= float(batches[0][0].min()) and float(batches[0][0].max()) < 1
    # the train command at full scale would have allocated 51,200 images of 224x224x3 on the host before
    src = train_command.load_data("synthetic", (224, 224, 3), 1000, "full", seed=0)
    assert isinstance(src, SyntheticData) and len(src) == 51_200
    assert sum(a.nbytes for a in src.test) < 200 * 2**20  # only the small test split lives on the host


def test_fit_trains_from_any_source_and_rejects_a_batch_that_does_not_fit():
    ds = data.digits()
    m1, m2 = models.build("small_cnn", seed=0, input_shape=(8, 8, 1)), models.build("small_cnn", seed=0,
                                                                                   input_shape=(8, 8, 1))
    h1 = training.fit(m1, ds, epochs=1, batch_size=64, verbose=False)
    h2 = training.fit(m2, DeviceData(ds.x_train, ds.y_train), test=(ds.x_test, ds.y_test), epochs=1,
                      batch_size=64, verbose=False)
    assert h1.train_loss == h2.train_loss and h1.test_accuracy == h2.test_accuracy
    with pytest.raises(ValueError, match=f"batch_size=4096 is larger than the {len(ds.x_train)} training examples"):
        training.fit(m1, ds, epochs=1, batch_size=4096, verbose=False)


def test_on_device_keeps_order_and_copies_ahead():
    got = list(on_device((np.full(3, i), np.full(2, -i)) for i in range(5)))
    assert [int(a[0]) for a, _ in got] == list(range(5)) and all(isinstance(a, jax.Array) for a, _ in got)
    assert to_float(np.zeros(2, np.float32)).dtype == np.float32
