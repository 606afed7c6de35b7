"""Multi-process start-up: `jax.distributed.initialize` before anything touches a device.

- `coordinator_address: auto`: let JAX detect the cluster (TPU pods, SLURM, Kubernetes/GKE, Open MPI).
- `coordinator_address: host:port` with `num_processes` and `process_id`: an explicit launch (e.g.
  one process per GPU node, or several CPU processes on one machine for testing).
- empty: one process; nothing to do.
CPU processes exchange data with gloo (the CPU backend has no collectives of its own).
"""

from __future__ import annotations

import logging

import jax

from chatcell_jax.errors import InputError
from chatcell_jax.train.config import TrainConfig

log = logging.getLogger(__name__)


def initialize(config: TrainConfig) -> None:
    if not config.coordinator_address or jax.distributed.is_initialized():
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if config.coordinator_address == "auto":
        jax.distributed.initialize()
    else:
        if config.num_processes < 1 or config.process_id < 0:
            raise InputError("coordinator_address needs num_processes (>= 1) and process_id (0-based) as well")
        jax.distributed.initialize(
            coordinator_address=config.coordinator_address,
            num_processes=config.num_processes,
            process_id=config.process_id,
        )
    _warm_up()
    log.info(
        "process %d of %d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


def _warm_up() -> None:
    """Open the process-to-process channel now, while all processes are in step: gloo gives a new
    channel 30 s to connect, which an uneven start (one process still compiling) can exceed."""
    import numpy as np
    from jax.experimental import multihost_utils

    multihost_utils.process_allgather(np.zeros(2, np.int32))
    multihost_utils.sync_global_devices("chatcell: processes up")


def compile_in_step(fn, *args) -> None:
    """Compile `fn` for `args` on every process, then wait for all: the first run of a sharded
    program opens its device channels, which must not time out on a slower compiler."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    fn.lower(*args).compile()
    multihost_utils.sync_global_devices("chatcell: compiled")
