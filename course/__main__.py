"""The course's command line: ``course COMMAND`` (or ``python -m course COMMAND``); ``course COMMAND --help``
describes each command's options and their defaults.

Every argument is checked where it enters: a value that cannot work (a size of 0, a negative learning rate, an
unknown model, a checkpoint folder holding another run) ends with one line, ``error: ...``, naming the argument
and what is allowed, and exit status 2; never a traceback.
"""
from __future__ import annotations

import argparse
import json
import math
import sys

from course.parameters import MAX_SEED, SCALES

DTYPES = ("float32", "bfloat16")  # course.precision.DTYPES (a test checks they agree), without importing jax

EXAMPLES = """\
examples:
  course count resnet50                      per-layer parameters and MACs at the model's input size
  course count googlenet --mode train        the training path (auxiliary heads included)
  course count small_cnn --size 32 --json
  course bench                               train-step time of every notebook-scale model
  course train small_cnn --data digits --epochs 5 --checkpoint-dir runs/cnn [--resume]
"""


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help with each option's default (argparse's own), except where there is none to show (None, False), and the
    description's line breaks kept."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _whole(minimum: int):
    """An argparse type: a whole number >= ``minimum``, else a message naming what is allowed."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {minimum}, not {text!r}")
        return value
    parse.__name__ = f"whole number >= {minimum}"
    return parse


def _seed(text: str) -> int:
    value = _whole(0)(text)
    if value > MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be a whole number from 0 to {MAX_SEED:,}, not {text!r}")
    return value


def _learning_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number (e.g. 1e-3), not {text!r}")
    return value


def _counted(name: str, size: int | None, channels: int | None = None, mode: str = "eval"):
    """``(input shape, course.counting table)`` of model ``name`` at ``size`` x ``size`` x ``channels`` (None: its
    own), or a ValueError saying why it cannot take that input (e.g. its feature maps would shrink to 0x0)."""
    from course import counting, models

    h, w, c = models.get_spec(name).input_shape
    shape = (size or h, size or w, channels or c)
    what = f"{name} cannot take a {shape[0]}x{shape[1]}x{shape[2]} input"
    try:
        table = counting.count(models.build(name, input_shape=shape, abstract=True), shape, name, mode=mode)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{what}: {e}") from None
    for r in table.rows:
        for where, maps in (("input", r.in_shape), ("output", r.out_shape)):
            if 0 in tuple(maps)[:-1]:  # a spatial size of 0: nothing left to compute from
                raise ValueError(f"{what}: its feature maps shrink to {'x'.join(map(str, maps[:-1]))} at {r.path}'s "
                                 f"{where}; use a larger --size (its own input is {h}x{w})")
    return shape, table


def _count(args) -> int:
    _, table = _counted(args.model, args.size, mode=args.mode)
    print(table.to_json() if args.json else table)
    return 0


def _bench(args) -> int:
    from course import bench

    names = args.models or bench.notebook_scale_models()
    shapes = {name: _counted(name, args.size, args.channels)[0] for name in names}  # fail fast, before compiling
    import jax

    device = jax.devices()[0]
    if not args.json:
        print(f"train step (forward + backward + Adam) on {device.device_kind} ({device.platform}), median of "
              f"{args.steps} steps after compiling; TFLOP/s = 3 x forward FLOPs counted by course.counting")
        if bench.device_peak_tflops(args.dtype) is None:
            print(f"no data-sheet peak known for this device; a {args.dtype} 1024x1024 matmul reaches "
                  f"{bench.measured_matmul_tflops(dtype=args.dtype):.4f} TFLOP/s here")
    for name in names:
        r = bench.bench_train_step(name, args.batch, args.steps, dtype=args.dtype, input_shape=shapes[name],
                                   progress=sys.stderr)
        print(json.dumps(r.to_dict()) if args.json else r, flush=True)
    return 0


def _train(args) -> int:
    import contextlib

    from course import distributed, train_command

    distributed.join(args.coordinator, args.num_processes, args.process_id)  # before jax touches a device
    result: dict = {}
    with train_command.stdout_to_stderr() if args.json else contextlib.nullcontext():  # stdout: the JSON only
        hist = train_command.train_run(
            args.model, args.data, scale=args.scale, epochs=args.epochs, batch=args.batch, dtype=args.dtype,
            lr=args.lr, seed=args.seed, checkpoint_dir=args.checkpoint_dir, resume=args.resume,
            devices=args.devices, overwrite=args.overwrite, size=args.size, workers=args.workers,
            result=result)
    if args.json:
        out = train_command.summary(hist, result)  # every process computes it (it reads global arrays)
        if distributed.is_main():
            print(json.dumps(out), flush=True)
    return 0


def parser() -> argparse.ArgumentParser:
    """The command line's parser: every option with a help line, its default and, where fixed, its choices."""
    p = argparse.ArgumentParser(prog="course", formatter_class=_Formatter, epilog=EXAMPLES,
                                description="Why modern CNN architectures look the way they do: the course's "
                                            "library from the command line.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    c = sub.add_parser("count", formatter_class=_Formatter, help="per-layer parameters and multiply-accumulates (MACs) of a model, at any input size",
                       description="Per-layer parameters, MACs, FLOPs and XLA's FLOPs of a registered model.")
    c.add_argument("model", help="a model name; an unknown one lists the known names")
    c.add_argument("--size", type=_whole(1), help="input height = width (default: the model's own)")
    c.add_argument("--mode", choices=("eval", "train"), default="eval",
                   help="eval: the inference path; train: with training-only branches (auxiliary heads)")
    c.add_argument("--json", action="store_true", help="rows and totals as JSON")
    b = sub.add_parser("bench", formatter_class=_Formatter, help="the train step's time, images/s and achieved TFLOP/s of models, on whatever device jax sees",
                       description="Time of the full train step (forward, backward, Adam), images/s, host "
                                   "overhead and achieved TFLOP/s, on whatever device jax sees.")
    b.add_argument("models", nargs="*", help="model names (default: every model with inputs up to 64x64)")
    b.add_argument("--batch", type=_whole(1), help="batch size (default: each model's own)")
    b.add_argument("--steps", type=_whole(1), default=20, help="timed steps after compiling (the median is shown)")
    b.add_argument("--dtype", choices=DTYPES, default="float32",
                   help="bfloat16: mixed precision (float32 weights, bfloat16 compute)")
    b.add_argument("--size", type=_whole(1), help="input height = width (default: each model's own)")
    b.add_argument("--channels", type=_whole(1), help="input channels (default: each model's own; e.g. "
                   "resnet20 --size 32 --channels 3 is CIFAR-10's shape)")
    b.add_argument("--json", action="store_true", help="one JSON object per model (images_per_s, step_ms, ...)")
    t = sub.add_parser("train", formatter_class=_Formatter, help="train a model on a dataset, with a checkpoint after every epoch and exact resume",
                       description="Train a registered model on a dataset; one log line per epoch (losses, "
                                   "accuracies, time, images/s, the checkpoint saved).")
    t.add_argument("model", help="a model name; an unknown one lists the known names")
    t.add_argument("--data", required=True, help="digits, shapes, synthetic, or cifar10:DIR (a local CIFAR-10)")
    t.add_argument("--scale", choices=SCALES, default="small",
                   help="default epochs, batch and data size: small (laptop CPU) or full (GPU)")
    t.add_argument("--epochs", type=_whole(1), help="total epochs, a resumed run continuing up to this number "
                   "(default: 5 at --scale small, 30 at full)")
    t.add_argument("--batch", type=_whole(1), help="batch size (default: 64 at --scale small, 256 at full)")
    t.add_argument("--dtype", choices=DTYPES, default="float32",
                   help="bfloat16: mixed precision (float32 weights, bfloat16 compute)")
    t.add_argument("--lr", type=_learning_rate, default=1e-3, help="Adam's learning rate")
    t.add_argument("--seed", type=_seed, default=0, help="initial weights and batch order")
    t.add_argument("--checkpoint-dir", help="write a checkpoint (orbax, sha256-checked) here after every epoch; "
                   "one folder holds one run")
    t.add_argument("--resume", action="store_true", help="continue the run in --checkpoint-dir from its latest "
                   "intact checkpoint (the same arguments are required)")
    t.add_argument("--overwrite", action="store_true", help="start afresh in a --checkpoint-dir that holds a run, "
                   "deleting its checkpoints")
    t.add_argument("--devices", type=_whole(0), help="data-parallel over this many devices (0: all; default: one)")
    t.add_argument("--size", type=_whole(1), help="input height = width (default: the model's own)")
    t.add_argument("--workers", type=_whole(0), help="folder data: decoding processes (default: CPU cores - 1, "
                   "up to 8)")
    t.add_argument("--json", action="store_true", help="stdout: one final JSON object (loss, accuracy, "
                   "param_sq_sum, images_per_s, ...); the epoch lines go to stderr")
    from course import data_bench, distributed, launch  # their parsers; no jax import

    distributed.add_arguments(t)
    launch.add_parser(sub)
    data_bench.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)  # a malformed argument: argparse's usage line and exit status 2
    import course

    course.configure()  # the course's PRNG and compilation cache, as in the notebooks
    from course.models import UnknownModelError

    try:
        from course import data_bench, launch

        return {"count": _count, "bench": _bench, "train": _train, "launch": launch.main,
                "bench-data": data_bench.main}[args.command](args)
    except (ValueError, UnknownModelError) as e:  # what a user can cause: DatasetError, CheckpointError, ... too
        print(f"error: {e}", file=sys.stderr)
        return 2


def console() -> None:
    """The ``course`` console script (pyproject.toml)."""
    sys.exit(main())


if __name__ == "__main__":
    console()
