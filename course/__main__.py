"""Command line: ``python -m course count MODEL`` and ``python -m course bench [MODEL ...]``.

  python -m course count resnet50                  per-layer parameters and MACs at the model's input size
  python -m course count googlenet --mode train    the training path (auxiliary heads included)
  python -m course count small_cnn --size 32 --json
  python -m course bench                           train-step time of every notebook-scale model
  python -m course train small_cnn --data digits --epochs 5 --checkpoint-dir runs/cnn [--resume]
"""
from __future__ import annotations

import argparse
import json
import sys


def _count(args) -> int:
    from course import counting, models

    spec = models.get_spec(args.model)
    h, w, c = spec.input_shape
    shape = (args.size, args.size, c) if args.size else (h, w, c)
    try:
        model = models.build(args.model, input_shape=shape, abstract=True)
        table = counting.count(model, shape, args.model, mode=args.mode)
    except (ValueError, TypeError) as e:
        print(f"error: {args.model} cannot take a {shape[0]}x{shape[1]}x{shape[2]} input: {e}", file=sys.stderr)
        return 2
    print(table.to_json() if args.json else table)
    return 0


def _bench(args) -> int:
    from course import bench

    names = args.models or bench.notebook_scale_models()
    for name in names:
        bench.models.get_spec(name)  # fail fast on a typo, before compiling anything
    import jax

    device = jax.devices()[0]
    if not args.json:
        print(f"train step (forward + backward + Adam) on {device.device_kind} ({device.platform}), median of "
              f"{args.steps} steps after compiling; TFLOP/s = 3 x forward FLOPs counted by course.counting")
        if bench.device_peak_tflops(args.dtype) is None:
            print(f"no data-sheet peak known for this device; a {args.dtype} 1024x1024 matmul reaches "
                  f"{bench.measured_matmul_tflops(dtype=args.dtype):.4f} TFLOP/s here")
    for name in names:
        shape = None
        if args.size or args.channels:
            h, w, c = bench.models.get_spec(name).input_shape
            shape = (args.size or h, args.size or w, args.channels or c)
        r = bench.bench_train_step(name, args.batch, args.steps, dtype=args.dtype, input_shape=shape)
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
            devices=args.devices, size=args.size, workers=args.workers, result=result)
    if args.json:
        out = train_command.summary(hist, result)  # every process computes it (it reads global arrays)
        if distributed.is_main():
            print(json.dumps(out), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m course", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("count", help="per-layer parameters and multiply-accumulates of a model")
    c.add_argument("model", help="a model name; an unknown one lists the known names")
    c.add_argument("--size", type=int, help="input height = width (default: the model's own)")
    c.add_argument("--mode", choices=("eval", "train"), default="eval",
                   help="eval: the inference path (default); train: with training-only branches")
    c.add_argument("--json", action="store_true", help="rows and totals as JSON")
    b = sub.add_parser("bench", help="train-step time of models at the notebook scale")
    b.add_argument("models", nargs="*", help="model names (default: every model with inputs up to 64x64)")
    b.add_argument("--batch", type=int, help="batch size (default: each model's own)")
    b.add_argument("--steps", type=int, default=20)
    b.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="bfloat16: mixed precision (float32 weights, bfloat16 compute)")
    b.add_argument("--size", type=int, help="input height = width (default: each model's own)")
    b.add_argument("--channels", type=int, help="input channels (default: each model's own; e.g. resnet20 "
                   "--size 32 --channels 3 is CIFAR-10's shape)")
    b.add_argument("--json", action="store_true", help="one JSON object per model (images_per_s, step_ms, ...)")
    t = sub.add_parser("train", help="train a model on a dataset, with checkpoints and resume")
    t.add_argument("model")
    t.add_argument("--data", required=True, help="digits, shapes, synthetic, or cifar10:DIR")
    t.add_argument("--scale", default="small", help="small (laptop) or full: default epochs, batch and data size")
    t.add_argument("--epochs", type=int, help="total epochs (a resumed run continues up to this number)")
    t.add_argument("--batch", type=int)
    t.add_argument("--dtype", default="float32", help="float32, or bfloat16 for mixed precision")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--checkpoint-dir", help="write a checkpoint (orbax) after every epoch here")
    t.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --checkpoint-dir")
    t.add_argument("--devices", type=int, help="data-parallel over this many devices (0: all)")
    t.add_argument("--size", type=int, help="input height = width (default: the model's own)")
    t.add_argument("--workers", type=int, help="folder data: decoding processes (default: CPU cores - 1, up to 8)")
    t.add_argument("--json", action="store_true", help="stdout: one final JSON object (loss, accuracy, "
                   "param_sq_sum, images_per_s, ...); the epoch lines go to stderr")
    from course import data_bench, distributed, launch  # their parsers; no jax import

    distributed.add_arguments(t)
    launch.add_parser(sub)
    data_bench.add_parser(sub)
    args = p.parse_args(argv)
    import course

    course.configure()  # the course's PRNG and compilation cache, as in the notebooks
    from course.checkpoint import CheckpointError
    from course.data import DatasetError
    from course.models import UnknownModelError

    try:
        return {"count": _count, "bench": _bench, "train": _train, "launch": launch.main,
                "bench-data": data_bench.main}[args.command](args)
    except (UnknownModelError, DatasetError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        if args.command not in ("train", "launch", "bench-data"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
