"""The jitted train and eval steps over the functional T5, with explicit shardings and donation.

The train state is a `TrainState` (params, opt_state, step, rng). Parameters keep the
shardings of `chatcell_jax.model.sharding` (born sharded); optimizer moments take their parameter's
sharding, and anything else (counts, Adafactor's small factored statistics) is replicated. The
batch is split over (data, fsdp). The state buffers are donated, so a step updates in place.

Dropout keys are derived, never carried: fold_in(rng, step) then fold_in(micro-batch), so a resumed
run draws exactly the masks the uninterrupted run would have drawn.

The objective's token weights and denominator come from the whole global batch before it is split
(`loss.loss_weights`). Gradient accumulation runs inside the one jitted step (`lax.scan` over
micro-batches): gradients of weighted loss sums are added up and divided by the denominator once, so
accumulating gives the same objective as one big batch, whatever the loss normalization.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from chatcell_jax.model.config import T5Config
from chatcell_jax.model.t5 import forward
from chatcell_jax.train.data import TASK_SLOTS
from chatcell_jax.train.loss import loss_weights, token_loss_sums


class TrainState(NamedTuple):
    """What a checkpoint holds and a step updates (also used for a tree of shardings of it).

    Checkpoints store it as the dict `as_dict()`, keyed by field name."""

    params: Any  # nested dict, the layout of chatcell_jax.model.params.param_specs
    opt_state: Any  # optax state of `params`
    step: Any  # int32 scalar: optimizer steps done
    rng: Any  # uint32 raw key data: the root of every dropout key (never advanced, see fold_in)

    def as_dict(self) -> dict[str, Any]:
        return self._asdict()

    @classmethod
    def from_dict(cls, tree: dict[str, Any]) -> TrainState:
        return cls(**tree)


def init_state(params, tx: optax.GradientTransformation, seed: int) -> TrainState:
    return TrainState(
        params=params,
        opt_state=tx.init(params),
        step=jnp.zeros((), jnp.int32),
        rng=jax.random.key_data(jax.random.key(seed)),
    )


def state_shardings(abstract_state: TrainState, param_shardings, mesh, tx: optax.GradientTransformation) -> TrainState:
    """NamedShardings for every leaf of the (abstract) train state.

    Optimizer-state copies of the parameter tree (found by optax from `tx`) take a parameter's
    sharding where the leaf has that parameter's shape (Adam moments); everything else, such as
    Adafactor's factored moments and step counts, is replicated."""
    replicated = NamedSharding(mesh, PartitionSpec())

    def like_param(leaf, sharding, param):
        return sharding if tuple(leaf.shape) == tuple(param.shape) else replicated

    opt = optax.tree_utils.tree_map_params(
        tx,
        like_param,
        abstract_state.opt_state,
        param_shardings,
        abstract_state.params,
        transform_non_params=lambda _: replicated,
    )
    return TrainState(params=param_shardings, opt_state=opt, step=replicated, rng=replicated)


@dataclass(frozen=True)
class Objective:
    """What the train step differentiates (see `chatcell_jax.train.loss`)."""

    normalization: str = "tokens"
    task_weights: tuple[float, ...] = (1.0,) * TASK_SLOTS
    label_smoothing: float = 0.0
    z_loss: float = 0.0
    decoder_input_dropout: float = 0.0
    unk_id: int = 2  # what a dropped decoder input becomes (T5's and our tokenizers' <unk>)


def drop_decoder_inputs(batch: dict, key: jax.Array, rate: float, start_id: int, unk_id: int) -> dict:
    """Teacher-forcing inputs replaced by <unk> at `rate` (word dropout, Bowman et al. 2016).

    A generated cell's first genes reveal its type, so with the whole true prefix in view the
    decoder can ignore the instruction after the first token or two and learns to generate cells of
    *some* type, not the one asked for. With part of the prefix hidden, the instruction is the
    reliable evidence at every position. Start tokens (segment starts) are kept. Drawn over the
    global batch from the step's key, so it is the same on any mesh and on resume."""
    inputs = batch["decoder_input_ids"]
    drop = jax.random.bernoulli(key, rate, inputs.shape) & (inputs != start_id)
    return {**batch, "decoder_input_ids": jnp.where(drop, unk_id, inputs)}


DECODER_DROPOUT_STREAM = 2**20  # a fold_in index no micro-batch uses
SUM_KEYS = ("objective", "ce", "tokens", "task_ce", "task_tokens")


def _sums(
    model_cfg: T5Config, params, batch: dict, key: jax.Array | None, objective: Objective
) -> dict[str, jax.Array]:
    logits = forward(
        model_cfg,
        params,
        batch["input_ids"],
        batch["attention_mask"],
        batch["decoder_input_ids"],
        dropout_rng=key,
        encoder_segment_ids=batch.get("encoder_segment_ids"),
        decoder_segment_ids=batch.get("decoder_segment_ids"),
    )
    return token_loss_sums(
        logits,
        batch["labels"],
        model_cfg.vocab_size,
        objective.label_smoothing,
        objective.z_loss,
        batch.get("loss_weights"),
        batch.get("label_tasks"),
    )


def _micro_batches(batch: dict, n: int) -> dict:
    """[B, ...] -> [n, B/n, ...] taking rows i, i+n, ... into micro-batch i, so each micro-batch
    keeps the batch's sharding over devices (a local reshape, no communication)."""
    return {k: jnp.swapaxes(v.reshape((v.shape[0] // n, n) + v.shape[1:]), 0, 1) for k, v in batch.items()}


def train_step(
    model_cfg: T5Config,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    accum: int,
    objective: Objective,
    state: TrainState,
    batch: dict,
) -> tuple[TrainState, dict]:
    params = state.params
    step_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    use_dropout = model_cfg.dropout_rate > 0
    weights, denominator = loss_weights(
        batch, objective.normalization, jnp.asarray(objective.task_weights, jnp.float32)
    )
    batch = {**batch, "loss_weights": weights}
    if objective.decoder_input_dropout > 0:
        batch = drop_decoder_inputs(
            batch,
            jax.random.fold_in(step_key, DECODER_DROPOUT_STREAM),
            objective.decoder_input_dropout,
            model_cfg.decoder_start_token_id,
            objective.unk_id,
        )

    def grads_of(micro: dict, index) -> tuple[Any, dict]:
        key = jax.random.fold_in(step_key, index) if use_dropout else None
        fn = lambda p: (lambda s: (s["objective"], s))(_sums(model_cfg, p, micro, key, objective))
        (_, sums), grads = jax.value_and_grad(fn, has_aux=True)(params)
        return grads, sums

    if accum == 1:
        grads, sums = grads_of(batch, 0)
    else:

        def body(carry, xs):
            g, s = grads_of(*xs)
            return jax.tree.map(jnp.add, carry, (g, s)), None

        zero_sums = {k: jnp.zeros((TASK_SLOTS,) if k.startswith("task_") else (), jnp.float32) for k in SUM_KEYS}
        zeros = jax.tree.map(jnp.zeros_like, params), zero_sums
        (grads, sums), _ = jax.lax.scan(body, zeros, (_micro_batches(batch, accum), jnp.arange(accum)))
    tokens = jnp.maximum(sums["tokens"], 1.0)
    grads = jax.tree.map(lambda g: g / denominator, grads)
    updates, opt_state = tx.update(grads, state.opt_state, params)
    new_state = state._replace(params=optax.apply_updates(params, updates), opt_state=opt_state, step=state.step + 1)
    metrics = {
        "loss": sums["ce"] / tokens,
        "objective": sums["objective"] / denominator,
        "target_tokens": sums["tokens"],
        "task_ce": sums["task_ce"],
        "task_tokens": sums["task_tokens"],
        "grad_norm": optax.tree_utils.tree_norm(grads),
        "learning_rate": schedule(state.step),
    }
    return new_state, metrics


def eval_sums(model_cfg: T5Config, params, batch: dict) -> dict[str, jax.Array]:
    sums = _sums(model_cfg, params, batch, None, Objective())
    return {k: sums[k] for k in ("ce", "tokens", "task_ce", "task_tokens")}


def compile_steps(
    model_cfg: T5Config,
    tx,
    schedule,
    accum: int,
    objective: Objective,
    shardings: TrainState,
    batch_sharding: NamedSharding,
) -> tuple[Callable, Callable]:
    """(train_step(state, batch) -> (state, metrics), eval_step(params, batch) -> sums), jitted with
    explicit in/out shardings; the train state is donated."""
    mesh = batch_sharding.mesh
    replicated = NamedSharding(mesh, PartitionSpec())
    step = jax.jit(
        partial(train_step, model_cfg, tx, schedule, accum, objective),
        in_shardings=(shardings, batch_sharding),
        out_shardings=(shardings, replicated),
        donate_argnums=(0,),
    )
    evaluate = jax.jit(
        partial(eval_sums, model_cfg), in_shardings=(shardings.params, batch_sharding), out_shardings=replicated
    )
    return step, evaluate
