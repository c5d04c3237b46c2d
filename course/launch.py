"""``python -m course launch --processes N -- train ...``: N local processes forming one JAX distributed system.

For a laptop or CI, where there is no cluster launcher: each child is ``python -m course train ...`` with
``--coordinator 127.0.0.1:PORT --num-processes N --process-id I`` appended, one CPU device
(``JAX_PLATFORMS=cpu``, no simulated devices) and gloo collectives (:func:`course.distributed.join`). The children
share this terminal: process 0 prints the run; the others print nothing but gloo's connection line on stderr. If
one child fails, the others are stopped and its exit status is returned. On a real cluster use the cluster's
launcher instead (``srun python -m course train ...``; see the README).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

# What a child must not inherit: simulated devices would give each process several, a GPU would be shared.
CHILD_ENV = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_commands(processes: int, argv: list[str], port: int) -> list[list[str]]:
    """The command line of each of the ``processes`` children for ``python -m course ARGV``."""
    return [[sys.executable, "-m", "course", *argv, "--coordinator", f"127.0.0.1:{port}",
             "--num-processes", str(processes), "--process-id", str(i)] for i in range(processes)]


def launch(processes: int, argv: list[str], poll_s: float = 0.2) -> int:
    """Run ``python -m course ARGV`` as ``processes`` cooperating local processes; their exit status (the first
    failing child's, else 0)."""
    if processes < 1:
        raise ValueError(f"--processes must be at least 1, not {processes}")
    if not argv or argv[0] != "train":
        raise ValueError("launch runs the train command: python -m course launch --processes N -- train MODEL ...")
    if any(a in argv for a in ("--coordinator", "--num-processes", "--process-id")):
        raise ValueError("launch sets --coordinator, --num-processes and --process-id itself; leave them out")
    env = dict(os.environ, **CHILD_ENV)
    children = [subprocess.Popen(cmd, env=env) for cmd in child_commands(processes, argv, free_port())]
    try:
        while True:
            codes = [c.poll() for c in children]
            failed = [rc for rc in codes if rc not in (None, 0)]
            if failed or all(rc == 0 for rc in codes):
                break
            time.sleep(poll_s)
    finally:
        for c in children:  # stop the others when one failed (or on Ctrl-C): each by its own pid
            if c.poll() is None:
                c.send_signal(signal.SIGTERM)
        for c in children:
            try:
                c.wait(timeout=30)
            except subprocess.TimeoutExpired:
                c.kill()
    return failed[0] if failed else 0


def add_parser(sub) -> None:
    p = sub.add_parser("launch", help="run the train command as N local processes (one CPU device each)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--processes", type=int, required=True, metavar="N", help="how many local processes to start")
    p.add_argument("argv", nargs="+", metavar="-- train ...", help="the command every process runs")


def main(args) -> int:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    return launch(args.processes, argv)
