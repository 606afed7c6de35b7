"""Token-level cross entropy in float32, as Hugging Face computes it, plus t5x's options.

`loss` is the plain mean cross entropy over target tokens whose label is not IGNORE (what
`T5ForConditionalGeneration(labels=...)` returns), so numbers compare across frameworks. The
objective that is differentiated may add label smoothing (HF's LabelSmoother: mix in the mean
negative log-probability over the real vocabulary) and z-loss (t5x: z_loss * logsumexp^2).
Sums and counts are returned separately so micro-batches and hosts combine exactly.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from chatcell_jax.data import IGNORE


def token_loss_sums(logits: jax.Array, labels: jax.Array, vocab_size: int, label_smoothing: float = 0.0,
                    z_loss: float = 0.0) -> dict[str, jax.Array]:
    """{"objective", "ce", "tokens"} summed over the batch; logits [B, T, Vpad], labels [B, T]."""
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
    return {"objective": jnp.sum(per_token * mask), "ce": jnp.sum(nll * mask), "tokens": jnp.sum(mask)}
