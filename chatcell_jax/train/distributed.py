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

from chatcell_jax.config import TrainConfig
from chatcell_jax.errors import InputError

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
        jax.distributed.initialize(coordinator_address=config.coordinator_address,
                                   num_processes=config.num_processes, process_id=config.process_id)
    log.info("process %d of %d, %d local / %d global devices", jax.process_index(), jax.process_count(),
             jax.local_device_count(), jax.device_count())
