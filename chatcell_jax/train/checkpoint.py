"""Orbax checkpoints of a run: train state (params, optimizer, step, RNG) + the data position.

One `CheckpointManager` under RUN/checkpoints. Each step directory holds `state/` (the sharded
train-state pytree) and `data/` (grain's iterator state, one file per process). Saves are async:
`save` returns once the arrays are copied off the devices, and training goes on while they are
written; a save is only visible once committed, so a killed run resumes from the last complete
one. Kept: the latest `keep` checkpoints plus the best by validation loss.

Restoring reads onto the current mesh (abstract targets carry the NamedShardings), after checking
every array's shape against the model being trained, so a checkpoint of another model shape is a
clear InputError instead of an Orbax traceback.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from chatcell_jax.errors import InputError
from chatcell_jax.train.step import TrainState

log = logging.getLogger(__name__)

METRIC = "valid_loss"


class Checkpoints:
    def __init__(self, directory: Path, keep: int, keep_best: bool, async_save: bool = True):
        keep_policies: list[Any] = [policies.LatestN(n=keep)]
        if keep_best:
            keep_policies.append(
                policies.BestN(
                    get_metric_fn=lambda m: m[METRIC], reverse=True, n=1, keep_checkpoints_without_metrics=False
                )
            )
        options = ocp.CheckpointManagerOptions(
            enable_async_checkpointing=async_save,
            create=True,
            cleanup_tmp_directories=True,
            preservation_policy=policies.AnyPreservationPolicy(keep_policies),
        )
        self.directory = Path(directory).absolute()
        # Handlers named up front, so metadata can be read before the first save/restore.
        handlers = {"state": ocp.StandardCheckpointHandler(), "data": grain.checkpoint.CheckpointHandler()}
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: TrainState, data_iterator: Any, valid_loss: float | None = None) -> None:
        """Start an async save (returns once device buffers are copied)."""
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state.as_dict()), data=grain.checkpoint.CheckpointSave(data_iterator)
        )
        metrics = None if valid_loss is None else {METRIC: float(valid_loss)}
        self.manager.save(step, args=args, metrics=metrics, force=True)

    def check_shapes(self, step: int, abstract_state: TrainState) -> None:
        """InputError naming the first array whose saved shape differs from this run's model."""
        saved = self.manager.item_metadata(step)["state"]
        want = _flat(abstract_state.params)
        have = _flat(saved["params"])
        for name, shape in want.items():
            if name not in have:
                raise InputError(
                    f"checkpoint {self.directory / str(step)} has no {name!r}: it is from a different "
                    "model or optimizer; resume with the run's own config, or start a new --out"
                )
            if have[name] != shape:
                raise InputError(
                    f"checkpoint {self.directory / str(step)} holds {name!r} with shape {have[name]}, "
                    f"but this model needs {shape}: it was trained with another model shape (model, "
                    "tokenizer or mesh vocab padding); resume with the run's own config, or start a new --out"
                )

    def restore(self, step: int, abstract_state: TrainState, data_iterator: Any) -> TrainState:
        """The train state placed as `abstract_state` says; `data_iterator` is moved to the saved position."""
        self.check_shapes(step, abstract_state)
        try:
            restored = self.manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state.as_dict()),
                    data=grain.checkpoint.CheckpointRestore(data_iterator),
                ),
            )
        except (ValueError, KeyError, TypeError) as err:  # same model, other optimizer state or process count
            raise InputError(
                f"checkpoint {self.directory / str(step)} does not match this run (optimizer or number "
                f"of processes changed?): {err}; resume with the run's own config"
            ) from err
        log.info("restored checkpoint of step %d from %s", step, self.directory)
        return TrainState.from_dict(restored["state"])

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def _flat(tree: Any) -> dict[str, tuple[int, ...]]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        "/".join(str(getattr(k, "key", k)) for k in path): tuple(leaf.shape)
        for path, leaf in leaves
        if hasattr(leaf, "shape")
    }
