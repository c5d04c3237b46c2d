"""The robustness sweep: every notebook at every seed, every claim's outcome and interval, a claim x seed table.

``make seeds SEEDS="2 3 4 5 6 7 8 9"`` (= ``python -m tools.seed_sweep --seeds ... NOTEBOOK...``) executes each
notebook at each ``SEED`` with papermill, with ``course.claims`` in keep-going mode and logging to
``build/seeds/<notebook>.seed<N>.jsonl`` (one JSON line per claim: course/claims.py), so that one run records every
claim even where one fails. ``--jobs 2`` runs two notebooks at a time, each pinned to its own core with
``taskset -c`` (where there are that many cores): every run of the sweep is then also a one-core run, the cheap
stand-in for another machine (GUIDE: pinning perturbs results the way another CPU does).

It then prints the table: one row per claim, one column per seed (``✓`` holds, ``✗`` fails, ``·`` a report, which
claims nothing), each with its estimate, and the pass count. Seed 0's column comes from the log ``make notebooks``
writes when it regenerates the stored outputs. ``--table-only`` rebuilds the table from the logs already in the
directory; ``--markdown`` prints it as the README's table (claim, interval at SEED 0, passes over the sweep).
Exit status 1 when a notebook did not run to its end or an asserted claim failed at any seed.
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

from course import claims

LOG = "{stem}.seed{seed}.jsonl"


def run_one(notebook: pathlib.Path, seed: int, out: pathlib.Path, core: int | None) -> tuple[str, int, float, str]:
    """Execute ``notebook`` at ``SEED = seed`` into ``out``; returns (stem, seed, seconds, error or "")."""
    stem = notebook.stem
    log = out / LOG.format(stem=stem, seed=seed)
    log.unlink(missing_ok=True)
    env = dict(os.environ, COURSE_CLAIMS_LOG=str(log), COURSE_CLAIMS_KEEP_GOING="1", JAX_PLATFORMS="cpu",
               PYTHONHASHSEED="0")
    cmd = [sys.executable, "-m", "papermill", "--log-level", "WARNING", "-p", "SEED", str(seed),
           str(notebook), str(out / f"{stem}.seed{seed}.ipynb")]
    if core is not None:
        cmd = ["taskset", "-c", str(core)] + cmd
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    error = "" if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["exit status"])[-1]
    return stem, seed, time.perf_counter() - start, error


def sweep(notebooks: list[pathlib.Path], seeds: list[int], out: pathlib.Path, jobs: int) -> dict:
    """Run every (notebook, seed), ``jobs`` at a time; returns {(stem, seed): error} for the runs that broke."""
    out.mkdir(parents=True, exist_ok=True)
    pin = jobs > 1 and shutil.which("taskset") is not None and (os.cpu_count() or 1) >= jobs
    tasks = [(nb, s) for s in seeds for nb in notebooks]
    broken = {}
    free = collections.deque(range(jobs))
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        pending = {}
        for nb, s in tasks:
            if len(pending) == jobs:
                done, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
                for f in done:
                    free.append(pending.pop(f))
                    _report(f.result(), broken)
            core = free.popleft()
            pending[pool.submit(run_one, nb, s, out, core if pin else None)] = core
        for f in concurrent.futures.as_completed(pending):
            _report(f.result(), broken)
    return broken


def _report(result, broken):
    stem, seed, seconds, error = result
    print(f"{stem} SEED={seed}: {seconds:.0f} s{'  BROKE: ' + error if error else ''}", flush=True)
    if error:
        broken[(stem, seed)] = error


def read_logs(out: pathlib.Path) -> dict[str, dict[int, list[dict]]]:
    """{notebook stem: {seed: [claim records in order]}} from the logs in ``out``."""
    logs: dict[str, dict[int, list[dict]]] = collections.defaultdict(dict)
    for path in sorted(out.glob("*.seed*.jsonl")):
        stem, _, seed = path.name[:-len(".jsonl")].rpartition(".seed")
        logs[stem][int(seed)] = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return logs


def rows(logs) -> list[dict]:
    """One row per claim (notebook, text; the n-th claim of that text if it repeats), its record at every seed."""
    table = []
    for stem in sorted(logs):
        by_claim: dict[tuple[str, int], dict[int, dict]] = {}
        for seed, records in sorted(logs[stem].items()):
            seen = collections.Counter()
            for r in records:
                key = (r["claim"], seen[r["claim"]])
                seen[r["claim"]] += 1
                by_claim.setdefault(key, {})[seed] = r
        for (text, _), at in by_claim.items():
            kind = next(iter(at.values()))["kind"]
            table.append({"notebook": stem, "claim": text, "kind": kind, "at": at})
    return table


def _mark(r: dict | None) -> str:
    if r is None:
        return "  —   "
    return {True: "✓", False: "✗", None: "·"}[r["holds"]] + format(r["estimate"], claims.value_format(r["method"]))


def failures(table, sweep_seeds: list[int]) -> list[str]:
    """Asserted claims that failed, or were never reached, at a seed of the sweep."""
    bad = []
    for row in table:
        if row["kind"] == "report":
            continue
        for s in sweep_seeds:
            r = row["at"].get(s)
            if r is None or r["holds"] is False:
                bad.append(f"{row['notebook']} SEED={s}: {row['claim']}: {'not reached' if r is None else 'fails'}")
    return bad


def print_table(table, seeds: list[int]) -> None:
    cols = [0] + [s for s in seeds if s != 0] if any(0 in r["at"] for r in table) else seeds
    print("claim".ljust(72) + "".join(f"{'SEED ' + str(s):>9}" for s in cols) + "   passes")
    for row in table:
        checked = [row["at"].get(s) for s in seeds]
        passes = "report" if row["kind"] == "report" else \
            f"{sum(1 for r in checked if r and r['holds'])}/{len(seeds)}"
        text = f"{row['notebook'][:2]} {row['claim']}"
        print(f"{text[:71]:<72}" + "".join(f"{_mark(row['at'].get(s)):>9}" for s in cols) + f"   {passes}")


def markdown(table, seeds: list[int]) -> str:
    """The README's table: notebook, claim, kind, its interval at SEED 0, passes over the sweep's seeds."""
    lines = [f"| nb | claim | test | SEED 0: estimate ± 98% half-width | passes at SEED {', '.join(map(str, seeds))} |",
             "| --- | --- | --- | --- | --- |"]
    for row in table:
        r0 = row["at"].get(0)
        iv = "not run" if r0 is None else \
            f"{r0['estimate']:{claims.value_format(r0['method'])}} ± {(r0['high'] - r0['low']) / 2:.3f}" + \
            claims.relation(row["kind"], r0["bound"])
        checked = [row["at"].get(s) for s in seeds]
        passes = "(report: claims nothing)" if row["kind"] == "report" else \
            f"{sum(1 for r in checked if r and r['holds'])}/{len(seeds)}"
        method = "" if r0 is None else f" ({r0['method'].split(',')[0]})"
        text = row["claim"].replace("|", "\\|")
        lines.append(f"| {row['notebook'][:2]} | {text} | {row['kind']}{method} | {iv} "
                     f"| {passes} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.seed_sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("notebooks", nargs="+", type=pathlib.Path, help="notebooks to run")
    p.add_argument("--seeds", nargs="+", type=int, required=True, help="SEED values of the sweep (not 0)")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("build/seeds"),
                   help="where the executed notebooks and claim logs go (default: build/seeds)")
    p.add_argument("--jobs", type=int, default=2, help="notebooks run at a time, each on its own core (default: 2)")
    p.add_argument("--table-only", action="store_true", help="only rebuild the table from the logs in --out")
    p.add_argument("--markdown", action="store_true", help="print the README's markdown table instead")
    args = p.parse_args(argv)
    missing = [str(nb) for nb in args.notebooks if not nb.is_file()]
    if missing:
        p.error(f"no such notebook: {', '.join(missing)}")
    if args.jobs < 1:
        p.error(f"--jobs must be at least 1, not {args.jobs}")
    broken = {} if args.table_only else sweep(args.notebooks, args.seeds, args.out, args.jobs)
    stems = {nb.stem for nb in args.notebooks}
    table = [r for r in rows(read_logs(args.out)) if r["notebook"] in stems]
    if args.markdown:
        print(markdown(table, args.seeds))
    else:
        print_table(table, args.seeds)
    bad = [f"{stem} SEED={seed}: did not run to its end: {err}" for (stem, seed), err in sorted(broken.items())]
    bad += failures(table, args.seeds)
    for line in bad:
        print(line, file=sys.stderr)
    if not args.markdown:
        print(f"{len(table)} claims, {len(args.notebooks)} notebooks, SEED {' '.join(map(str, args.seeds))}: "
              + ("every asserted claim holds at every seed" if not bad else f"{len(bad)} failures"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
