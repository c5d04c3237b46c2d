"""``python -m course bench-data folder:DIR --size 224 --workers W``: how fast the folder pipeline feeds training.

Runs :func:`course.folder_data.pipeline` over ``DIR/train`` exactly as training does (decode, random resized crop,
flip, batch; ``W`` grain worker processes, 0 = in this process) and prints images per second after the first batch
(worker start-up is printed apart), per worker, and how many workers it takes at that rate to feed a step rate
(``--target``, default ResNet-50's 5,000 images/s on one GPU). With 0 workers it also prints the CPU time per
image (``time.process_time``), which a busy machine inflates much less than the wall-clock rate. Timings are figures
to print, never a test's.
"""
from __future__ import annotations

import json
import math
import time


def bench(directory: str, size: int = 224, workers: int = 1, batch: int = 64, images: int = 512,
          target: float = 5000.0, seed: int = 0) -> dict:
    """Time ``images`` training images (rounded down to whole batches, at most one epoch) through the pipeline."""
    from course.folder_data import FolderData, pipeline

    ds = FolderData(directory, size=size, workers=workers)
    steps = max(1, min(images, len(ds)) // batch)
    if len(ds) < batch:
        raise ValueError(f"{directory}/train has {len(ds)} images, fewer than one batch of {batch}; use --batch <= {len(ds)}")
    items = ds.epoch_items(batch, seed)[:steps * batch]
    t0 = time.perf_counter()
    it = iter(pipeline(ds.train, ds.val, items, size, batch, workers))
    next(it)
    t1, c1 = time.perf_counter(), time.process_time()
    for _ in range(steps - 1):
        next(it)
    t2, c2 = time.perf_counter(), time.process_time()
    if hasattr(it, "close"):
        it.close()
    rate = (steps - 1) * batch / (t2 - t1) if steps > 1 else batch / (t1 - t0)
    per_worker = rate / max(workers, 1)
    return {"directory": str(directory), "size": size, "workers": workers, "batch": batch, "images": steps * batch,
            "startup_s": t1 - t0, "images_per_s": rate, "images_per_s_per_worker": per_worker,
            "cpu_ms_per_image": 1e3 * (c2 - c1) / ((steps - 1) * batch) if workers == 0 and steps > 1 else None,
            "target_images_per_s": target, "workers_for_target": math.ceil(target / per_worker)}


def add_parser(sub) -> None:
    p = sub.add_parser("bench-data", help="images/s that the folder pipeline decodes and augments",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("data", metavar="folder:DIR", help="the image folder to time (DIR/train/<class>/*)")
    p.add_argument("--size", type=int, default=224, help="the crops' height = width")
    p.add_argument("--workers", type=int, nargs="+", default=[1], metavar="W",
                   help="decoding processes; several values: one line each (e.g. --workers 0 1 2)")
    p.add_argument("--batch", type=int, default=64, help="images per batch")
    p.add_argument("--images", type=int, default=512, help="how many training images to time")
    p.add_argument("--target", type=float, default=5000.0, help="a step rate to feed, in images/s")
    p.add_argument("--json", action="store_true", help="one JSON object per line instead of text")


def main(args) -> int:
    if not args.data.startswith("folder:"):
        raise ValueError(f"bench-data times folder data: pass folder:DIR, not {args.data!r}")
    for w in args.workers:
        r = bench(args.data.split(":", 1)[1], args.size, w, args.batch, args.images, args.target)
        print(json.dumps(r) if args.json else
              f"{r['size']}x{r['size']}, {w} workers: {r['images_per_s']:7.1f} images/s after a start-up of "
              f"{r['startup_s']:.1f} s ({r['images_per_s_per_worker']:.1f} per worker); "
              f"{r['target_images_per_s']:.0f} images/s would take {r['workers_for_target']} such workers"
              + (f"; {r['cpu_ms_per_image']:.1f} ms of CPU per image" if r["cpu_ms_per_image"] else ""), flush=True)
    return 0
