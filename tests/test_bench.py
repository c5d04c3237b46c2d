"""course.bench: the figures it prints, the peaks it divides by, the JSON of the command line."""
import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from course import bench, counting, models


@pytest.mark.parametrize("kind, dtype, peak", [
    ("NVIDIA H100 PCIe", "bfloat16", 756.0), ("NVIDIA H100 80GB HBM3", "bfloat16", 989.0),
    ("NVIDIA H100 80GB HBM3", "float32", 494.7), ("NVIDIA H200", "bfloat16", 989.0),
    ("NVIDIA A100-SXM4-80GB", "float32", 156.0), ("cpu", "float32", None)])
def test_peaks_tell_the_h100_variants_apart_and_use_tf32_for_float32(kind, dtype, peak):
    assert bench.device_peak_tflops(dtype, SimpleNamespace(device_kind=kind)) == peak


def test_a_bench_result_is_consistent_and_names_its_fields(capsys):
    r = bench.bench_train_step("small_cnn", batch=8, steps=3, progress=sys.stderr)
    err = capsys.readouterr().err  # it says what it is doing while it compiles
    assert "small_cnn: building the model (16x16x1) and compiling its train step at batch 8 ..." in err
    assert "small_cnn: compiled in " in err and "timing 3 steps" in err
    d = r.to_dict()
    for key in ("model", "device", "dtype", "batch", "images_per_s", "step_ms", "host_overhead_ms",
                "macs_per_example", "achieved_tflops", "peak_tflops", "fraction_of_peak"):
        assert key in d, key
    assert d["images_per_s"] == pytest.approx(8 / (d["step_ms"] / 1e3))
    assert d["achieved_tflops"] == pytest.approx(6 * d["macs_per_example"] * d["images_per_s"] / 1e12)
    assert 0 < d["host_overhead_ms"] and 0 < d["step_ms"]


def test_bad_bench_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="at least 1"):
        bench.bench_train_step("small_cnn", batch=0)


@pytest.mark.slow
def test_bench_json_command_prints_one_object_per_model():
    out = subprocess.run([sys.executable, "-m", "course", "bench", "small_cnn", "--batch", "8", "--steps", "2",
                          "--size", "12", "--channels", "3", "--json"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    rows = [json.loads(line) for line in out.strip().splitlines()]
    assert len(rows) == 1 and rows[0]["model"] == "small_cnn" and rows[0]["batch"] == 8
    # the MACs of a 12x12x3 input, not of the model's own 16x16x1: the shape reached the benchmark
    assert rows[0]["macs_per_example"] == counting.count(models.build("small_cnn", input_shape=(12, 12, 3),
                                                                      abstract=True), (12, 12, 3)).macs
