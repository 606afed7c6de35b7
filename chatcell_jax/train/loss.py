"""Cross entropy in float32, as Hugging Face computes it, t5x's options, and how tokens are weighted.

`loss` is always the plain mean cross entropy over target tokens whose label is not IGNORE (what
`T5ForConditionalGeneration(labels=...)` returns), so numbers compare across frameworks. The
objective that is differentiated may add label smoothing (HF's LabelSmoother: mix in the mean
negative log-probability over the real vocabulary) and z-loss (t5x: z_loss * logsumexp^2), and
weighs the tokens by `loss_normalization`:

- `tokens`: every target token counts the same (HF's mean). ChatCell's tasks mix 2-token answers
  (a cell type + EOS) with 50-100-token gene lists, so here one gene list outweighs an annotation
  answer 25-50x and the classification tasks barely train.
- `examples`: each example's own token mean, averaged over the examples (t5x's
  AVERAGE_PER_SEQUENCE): every answer counts the same, whatever its length.
- `tasks`: as `examples` within each task, then each task's mean weighted by `task_weights`
  (normalised over the tasks present in the batch), so the mix of tasks in a batch does not matter.

The weights are computed once from the whole global batch (`loss_weights`), before it is split into
micro-batches, as per-token weights plus one denominator: the objective is sum(weight x loss) /
denominator, so micro-batches, devices and hosts add up to exactly the one-batch value.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from chatcell_jax.train.data import IGNORE, TASK_SLOTS


def _example_index(labels: jax.Array, segments: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """(tokens in the token's own example [B, T], 1 at the first token of each example [B, T]).

    An example is a row's run of one decoder segment id (packed rows) or the row's labels."""
    mask = labels != IGNORE
    segments = mask.astype(jnp.int32) if segments is None else segments
    same = (segments[:, :, None] == segments[:, None, :]) & mask[:, None, :]
    length = jnp.sum(same, axis=-1).astype(jnp.float32)
    previous = jnp.pad(segments[:, :-1], ((0, 0), (1, 0)), constant_values=-1)
    first = mask & (segments != previous)
    return jnp.where(mask, length, 1.0), first.astype(jnp.float32)


def loss_weights(batch: dict, normalization: str, task_weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(per-token weights [B, T], denominator) of the objective for a global batch.

    `task_weights` [TASK_SLOTS] are the relative weights of the tasks (`tasks` mode only)."""
    labels = batch["labels"]
    mask = (labels != IGNORE).astype(jnp.float32)
    if normalization == "tokens":
        return mask, jnp.maximum(jnp.sum(mask), 1.0)
    length, first = _example_index(labels, batch.get("decoder_segment_ids"))
    per_example = mask / length
    if normalization == "examples":
        return per_example, jnp.maximum(jnp.sum(first), 1.0)
    tasks = jax.nn.one_hot(_label_tasks(labels, batch.get("label_tasks")), TASK_SLOTS, dtype=jnp.float32)
    examples_per_task = jnp.einsum("bt,bts->s", first, tasks)
    present = examples_per_task > 0
    scale = jnp.where(present, task_weights / jnp.maximum(examples_per_task, 1.0), 0.0)
    weights = per_example * jnp.einsum("bts,s->bt", tasks, scale)
    return weights, jnp.maximum(jnp.sum(jnp.where(present, task_weights, 0.0)), 1e-12)


def _label_tasks(labels: jax.Array, label_tasks: jax.Array | None) -> jax.Array:
    """Task slot [B, T] of every target token; batches built without task ids count as the last slot."""
    return jnp.full(labels.shape, TASK_SLOTS - 1, jnp.int32) if label_tasks is None else label_tasks


def token_loss_sums(
    logits: jax.Array,
    labels: jax.Array,
    vocab_size: int,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    weights: jax.Array | None = None,
    label_tasks: jax.Array | None = None,
) -> dict[str, jax.Array]:
    """Sums over the batch; logits [B, T, Vpad], labels [B, T].

    "objective": sum of weights x per-token objective (weights default to the token mask), "ce"
    and "tokens": the plain cross entropy and the token count, "task_ce" / "task_tokens"
    [TASK_SLOTS]: the same per task (with `label_tasks`)."""
    logits = logits.astype(jnp.float32)
    mask = (labels != IGNORE).astype(jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, jnp.maximum(labels, 0)[..., None], axis=-1)[..., 0]
    nll = log_z - picked
    per_token = nll
    if label_smoothing > 0:
        real = jnp.arange(logits.shape[-1]) < vocab_size  # padded columns are not classes
        mean_logit = jnp.sum(jnp.where(real, logits, 0.0), axis=-1) / vocab_size
        smooth = log_z - mean_logit  # mean over the real vocabulary of -log p
        per_token = (1.0 - label_smoothing) * nll + label_smoothing * smooth
    if z_loss > 0:
        per_token = per_token + z_loss * jnp.square(log_z)
    weights = mask if weights is None else weights
    tasks = jax.nn.one_hot(_label_tasks(labels, label_tasks), TASK_SLOTS, dtype=jnp.float32) * mask[..., None]
    return {
        "objective": jnp.sum(per_token * weights),
        "ce": jnp.sum(nll * mask),
        "tokens": jnp.sum(mask),
        "task_ce": jnp.einsum("bt,bts->s", nll, tasks),
        "task_tokens": jnp.sum(tasks, axis=(0, 1)),
    }
