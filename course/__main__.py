"""Command line: ``python -m course count MODEL`` and ``python -m course bench [MODEL ...]``.

  python -m course count resnet50                  per-layer parameters and MACs at the model's input size
  python -m course count googlenet --mode train    the training path (auxiliary heads included)
  python -m course count small_cnn --size 32 --json
  python -m course bench                           train-step time of every notebook-scale model
"""
from __future__ import annotations

import argparse
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
    print(f"train step (forward + backward + Adam), median of {args.steps} steps after compiling")
    for name in names:
        print(bench.bench_train_step(name, args.batch, args.steps), flush=True)
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
    b.add_argument("--steps", type=int, default=10)
    args = p.parse_args(argv)
    from course.models import UnknownModelError

    try:
        return {"count": _count, "bench": _bench}[args.command](args)
    except UnknownModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
