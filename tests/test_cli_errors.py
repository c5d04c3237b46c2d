"""The command line a user meets: every bad argument is one line naming it and what is allowed, exit status 2 and
no traceback; a checkpoint folder holds one run; a diverging run stops naming the learning rate; the epoch log and
--help say what a practitioner expects; the notebooks' SCALE and SEED are checked in one line."""
import argparse
import math
import os
import re
import subprocess
import sys

import pytest

from course import checkpoint, parameters, precision, train_command
from course.__main__ import DTYPES, main, parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(argv, capsys):
    """(exit status, stderr) of ``course ARGV`` in this process, whether argparse or the command stopped it."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


@pytest.mark.parametrize("argv, message", [
    (["count", "googlenet", "--size", "0"], "argument --size: must be a whole number >= 1, not '0'"),
    (["count", "small_cnn", "--size", "3"], "small_cnn cannot take a 3x3x1 input: its feature maps shrink to 0x0"),
    (["count", "small_cnn", "--size", "x"], "argument --size: must be a whole number >= 1, not 'x'"),
    (["bench", "small_cnn", "--batch", "0"], "argument --batch: must be a whole number >= 1, not '0'"),
    (["bench", "small_cnn", "--steps", "0"], "argument --steps: must be a whole number >= 1, not '0'"),
    (["bench", "resnet5000"], "unknown model 'resnet5000'; known models:"),
    (["bench", "small_cnn", "--size", "3"], "small_cnn cannot take a 3x3x1 input: its feature maps shrink to 0x0"),
    (["bench", "--dtype", "float16"], "argument --dtype: invalid choice: 'float16'"),
    (["train", "small_cnn", "--data", "digits", "--lr", "-1"], "argument --lr: must be a positive number"),
    (["train", "small_cnn", "--data", "digits", "--lr", "nan"], "argument --lr: must be a positive number"),
    (["train", "small_cnn", "--data", "digits", "--seed", "-1"], "argument --seed: must be a whole number >= 0"),
    (["train", "small_cnn", "--data", "digits", "--epochs", "0"], "argument --epochs: must be a whole number >= 1"),
    (["train", "small_cnn", "--data", "digits", "--batch", "0"], "argument --batch: must be a whole number >= 1"),
    (["train", "small_cnn", "--data", "digits", "--devices", "-2"], "argument --devices: must be a whole number >= 0"),
    (["train", "small_cnn", "--data", "digits", "--scale", "huge"], "argument --scale: invalid choice: 'huge'"),
    (["train", "small_cnn", "--data", "digits", "--dtype", "float8"], "argument --dtype: invalid choice: 'float8'"),
    (["train", "small_cnn", "--data", "digits", "--checkpoint-dir", "d", "--resume", "--overwrite"],
     "--resume continues the run in --checkpoint-dir and --overwrite replaces it"),
    (["train", "small_cnn", "--data", "digits", "--overwrite"], "--overwrite needs --checkpoint-dir"),
])
def test_every_bad_argument_is_one_clear_line(argv, message, capsys):
    code, err = run_main(argv, capsys)
    assert code == 2 and message in err, err


def test_the_library_refuses_what_the_command_line_refuses():
    for lr in (-1.0, 0.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="--lr must be a positive learning rate"):
            train_command.train_run("small_cnn", "digits", lr=lr, verbose=False)
    with pytest.raises(parameters.ParameterError, match="--seed must be a whole number from 0"):
        train_command.train_run("small_cnn", "digits", seed=-1, verbose=False)


def test_divergence_names_the_learning_rate():
    train_command.check_converging(2.4, 10, 1e-3, 1)  # about a uniform guess: fine
    for loss in (math.nan, math.inf, 4909.0):
        with pytest.raises(ValueError, match=r"diverged at epoch 3: .*--lr 1 is too large, try 0.1"):
            train_command.check_converging(loss, 10, 1.0, 3)


@pytest.mark.slow
def test_one_folder_one_run_through_the_command_line(tmp_path, capsys):
    """The issue's sequence: a finished run, then another lr into the same folder without --resume."""
    d = str(tmp_path / "run")
    base = ["train", "small_cnn", "--data", "digits", "--checkpoint-dir", d]
    assert main([*base, "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "epoch 1/1  train loss" in out and " s, " in out and " images/s" in out
    assert f"checkpoint saved: {d}/1" in out
    code, err = run_main([*base, "--epochs", "2", "--lr", "0.01"], capsys)
    assert code == 2 and f"{d} already holds the checkpoints of a run (up to epoch 1" in err
    assert "pass --resume to continue it, choose another --checkpoint-dir, or pass --overwrite" in err
    code, err = run_main([*base, "--epochs", "2", "--lr", "0.01", "--resume"], capsys)
    assert code == 2 and "is of another run" in err and "'lr': (0.001, 0.01)" in err
    assert checkpoint.latest_epoch(d) == 1
    assert main([*base, "--epochs", "2", "--resume"]) == 0  # the original arguments: continues
    assert "resumed from epoch 1" in capsys.readouterr().out and checkpoint.latest_epoch(d) == 2
    assert main([*base, "--epochs", "1", "--lr", "0.01", "--overwrite"]) == 0
    assert checkpoint.latest_epoch(d) == 1
    os.remove(os.path.join(d, "run.json"))
    code, err = run_main([*base, "--epochs", "2", "--lr", "0.01", "--resume"], capsys)
    assert code == 2 and "run.json is missing" in err and "pass --overwrite" in err


def test_help_shows_defaults_choices_and_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    for command in ("count", "bench", "train"):
        assert re.search(rf"^ +{command} +\S", top, re.M), top  # listed, with what it does
    assert "``" not in top
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--scale {small,full}" in text and "--dtype {float32,bfloat16}" in text
    assert "(default: 0.001)" in text and "(default: small)" in text and "(default: None)" not in text
    s, f = train_command.SCALES["small"], train_command.SCALES["full"]
    assert f"(default: {s['epochs']} at --scale small, {f['epochs']} at full)" in text
    assert f"(default: {s['batch']} at --scale small, {f['batch']} at full)" in text
    assert set(DTYPES) == set(precision.DTYPES) and set(parameters.SCALES) == set(train_command.SCALES)
    commands = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"bench", "count", "train"} <= set(commands)
    for name, sub in commands.items():
        assert all(a.help for a in sub._actions), name  # a help line for every option


# ----------------------------------------------------------------------------------------------------------
# The notebooks' parameters cell
@pytest.mark.parametrize("scale, seed, message", [
    ("huge", 0, "SCALE must be one of 'small', 'full', not 'huge' (set it in the notebook's parameters cell"),
    ("small", -1, "SEED must be a whole number from 0 to 4,294,967,295, not -1"),
    ("small", 1.5, "SEED must be a whole number"), ("small", "1", "SEED must be a whole number"),
    ("small", True, "SEED must be a whole number"),
])
def test_notebook_parameters_are_checked_in_one_line(scale, seed, message):
    with pytest.raises(parameters.ParameterError) as e:
        parameters.check_parameters(scale, seed)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert e.value._render_traceback_() == [f"ParameterError: {e.value}"]  # what a notebook cell shows


def test_seeds_refuse_a_negative_seed_before_numpy_does():
    from course.seeds import seeds
    assert seeds(1, 3) == [3, 4, 5]
    with pytest.raises(parameters.ParameterError, match="SEED must be a whole number from 0"):
        seeds(-1, 3)


@pytest.mark.slow
def test_a_notebook_cell_shows_the_parameter_error_as_one_line():
    """IPython renders the error through its _render_traceback_ hook: no frames, just the line."""
    code = ("from IPython.core.interactiveshell import InteractiveShell\n"
            "sh = InteractiveShell.instance()\n"
            "sh.run_cell('import course; course.check_parameters(\"huge\", 0)')\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    shown = (r.stdout + r.stderr).strip().splitlines()
    assert shown[-1].startswith("ParameterError: SCALE must be one of 'small', 'full', not 'huge'"), shown
    assert not any("Traceback" in line or "File " in line for line in shown), shown
