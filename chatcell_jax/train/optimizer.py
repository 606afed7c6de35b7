"""Optimizer and learning-rate schedule from the run config (optax).

Linear warmup from zero to the peak, then cosine or linear decay to `end_learning_rate_ratio` x
peak at the last step (or constant). AdamW decays every weight except the norm scales, as Hugging
Face's Trainer excludes LayerNorm weights; Adafactor is T5's original optimizer.
"""

from __future__ import annotations

import jax
import optax

from chatcell_jax.train.config import TrainConfig


def make_schedule(config: TrainConfig) -> optax.Schedule:
    peak, steps = config.learning_rate, config.steps
    warmup = min(config.warmup_steps, max(steps - 1, 0))
    end = peak * config.end_learning_rate_ratio
    rest = max(steps - warmup, 1)
    if config.decay == "cosine":
        after = optax.cosine_decay_schedule(peak, rest, alpha=config.end_learning_rate_ratio)
    elif config.decay == "linear":
        after = optax.linear_schedule(peak, end, rest)
    else:
        after = optax.constant_schedule(peak)
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def decay_mask(params) -> dict:
    """True for weights that get weight decay: everything but norm scales."""

    def keep(path, _):
        return not any("norm" in str(getattr(p, "key", p)) for p in path)

    return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    schedule = make_schedule(config)
    if config.optimizer == "adamw":
        core = optax.adamw(
            schedule, b1=config.b1, b2=config.b2, eps=config.eps, weight_decay=config.weight_decay, mask=decay_mask
        )
    else:
        core = optax.adafactor(schedule, weight_decay_rate=config.weight_decay or None, weight_decay_mask=decay_mask)
    if config.grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(config.grad_clip), core)
    return core
