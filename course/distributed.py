"""Several processes, one training run: joining JAX's distributed runtime and feeding each process's rows.

Every process runs the same program. After :func:`join`, ``jax.devices()`` lists the devices of all processes,
:func:`course.parallel.make_mesh` spans them, and jitted steps run as one SPMD program whose collectives (the
gradient all-reduce) cross processes: NCCL between GPUs, gloo between CPU processes. Each process holds only its
own devices' part of a batch: :func:`process_rows` says which rows of a global batch those are, and
:func:`global_batch` assembles the global array from them (``jax.make_array_from_process_local_data``).

How processes are started (:func:`join`):

* a cluster launcher: ``srun`` (Slurm) or ``mpirun`` (Open MPI) sets variables that ``jax.distributed.initialize()``
  reads by itself (coordinator address, number of processes, this process's id);
* by hand, on any machines that reach each other: ``--coordinator HOST:PORT --num-processes N --process-id I`` on
  each, the coordinator being process 0's host;
* ``python -m course launch --processes N -- train ...`` (:mod:`course.launch`): N local processes with one CPU
  device each, for a laptop or CI. Tested that way (tests/test_distributed.py); on GPUs the code path is the same.

Only process 0 prints, logs and writes files beside checkpoints (:func:`is_main`); Orbax checkpoints are written
and read by all processes together.
"""
from __future__ import annotations

import os

import numpy as np

# The environment a cluster launcher sets for every process it starts, as jax's own cluster detection reads it
# (jax/_src/clusters/slurm_cluster.py, ompi_cluster.py), with the variable holding the number of processes.
CLUSTERS = {
    "Slurm": (("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID"), "SLURM_NTASKS"),
    "Open MPI": (("OMPI_MCA_orte_hnp_uri", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"), "OMPI_COMM_WORLD_SIZE"),
}


class DistributedError(ValueError):
    """Arguments for joining the distributed runtime that cannot work; the message says which and what to pass."""


def cluster_launch(environ=os.environ) -> str | None:
    """The name of the cluster launcher that started this process as one of several, or None."""
    for name, (needed, count) in CLUSTERS.items():
        if all(v in environ for v in needed) and environ[count].isdigit() and int(environ[count]) > 1:
            return name
    return None


def parse_coordinator(address: str) -> tuple[str, int]:
    """``"HOST:PORT"`` -> (host, port), or a :class:`DistributedError` saying what is wrong with it."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DistributedError(f"--coordinator {address!r} is not HOST:PORT (e.g. 127.0.0.1:12355, or process 0's "
                               f"host name and a free port on it)")
    return host, int(port)


def check_arguments(coordinator: str | None, num_processes: int | None, process_id: int | None) -> bool:
    """Validate the by-hand arguments; True if they ask to join (all three given), False if none is given."""
    given = {"--coordinator": coordinator, "--num-processes": num_processes, "--process-id": process_id}
    if all(v is None for v in given.values()):
        return False
    missing = [k for k, v in given.items() if v is None]
    if missing:
        raise DistributedError(f"{', '.join(missing)} missing: joining several processes by hand needs "
                               f"--coordinator HOST:PORT --num-processes N --process-id I on every process "
                               f"(or start them with: python -m course launch --processes N -- train ...)")
    parse_coordinator(coordinator)
    if num_processes < 1:
        raise DistributedError(f"--num-processes must be at least 1, not {num_processes}")
    if not 0 <= process_id < num_processes:
        raise DistributedError(f"--process-id {process_id} is outside 0..{num_processes - 1} "
                               f"(one id per process, 0 for the coordinator's)")
    return True


def join(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
         timeout_s: int = 300) -> int:
    """Join JAX's distributed runtime if this process is one of several; return the number of processes.

    With the three arguments, join by hand; otherwise join when a cluster launcher (:func:`cluster_launch`)
    started several processes; otherwise do nothing (one process). Call it before anything else touches jax's
    devices. CPU processes exchange collectives through gloo (set here; GPUs use NCCL whatever it says).
    """
    import jax

    by_hand = check_arguments(coordinator, num_processes, process_id)
    if not by_hand and cluster_launch() is None:
        return 1
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if by_hand:
        jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id,
                                   initialization_timeout=timeout_s)
    else:
        jax.distributed.initialize(initialization_timeout=timeout_s)  # jax reads the cluster's variables
    return jax.process_count()


def is_main() -> bool:
    """True on process 0 (the one that prints, logs and writes run descriptions), and in a one-process run."""
    import jax

    return jax.process_index() == 0


def process_rows(sharding, n: int) -> np.ndarray:
    """The rows of an ``n``-row global batch laid out with ``sharding`` (split along axis 0) that live on this
    process's devices, in the order :func:`global_batch` expects them: (n_local,) int indices."""
    starts = sorted({(idx[0].start or 0, idx[0].stop if idx[0].stop is not None else n)
                     for idx in sharding.addressable_devices_indices_map((n,)).values()})
    return np.concatenate([np.arange(a, b) for a, b in starts])


def global_batch(sharding, n: int, *local):
    """The global ``n``-row arrays whose rows :func:`process_rows` are ``local`` (host or device arrays of
    this process), each split along axis 0 with ``sharding``."""
    import jax

    out = [jax.make_array_from_process_local_data(sharding, a, (n, *a.shape[1:])) for a in local]
    return out if len(out) > 1 else out[0]


def add_arguments(parser) -> None:
    """The ``train`` options for joining several processes (no jax import: the parser stays fast)."""
    g = parser.add_argument_group("several processes (JAX's distributed runtime; Slurm and Open MPI are detected)")
    g.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address, to join by hand")
    g.add_argument("--num-processes", type=int, metavar="N", help="how many processes take part")
    g.add_argument("--process-id", type=int, metavar="I", help="this process's id, 0..N-1")
