"""Growing the vocabulary: new embedding rows (and head columns) for added tokens."""

from __future__ import annotations

import logging
from typing import Literal

import jax
import jax.numpy as jnp

from chatcell_jax.errors import InputError
from chatcell_jax.model.t5 import T5

log = logging.getLogger(__name__)


def _new_rows(old: jax.Array, n_new: int, init: str, key: jax.Array) -> jax.Array:
    """[n_new, D] rows: the mean of the existing rows, or N(0, 1) as a fresh T5 embedding is drawn."""
    if init == "mean":
        return jnp.broadcast_to(jnp.mean(old.astype(jnp.float32), axis=0), (n_new, old.shape[1])).astype(old.dtype)
    return jax.random.normal(key, (n_new, old.shape[1]), jnp.float32).astype(old.dtype)


def _grow(table: jax.Array, real: int, rows: int, new: jax.Array) -> jax.Array:
    """Table [rows, D]: the first `real` old rows verbatim, then `new`, then zero padding."""
    out = jnp.zeros((rows, table.shape[1]), table.dtype)
    out = out.at[:real].set(table[:real])
    return out.at[real : real + new.shape[0]].set(new)


def extend_vocab(model: T5, n_new: int, init: Literal["mean", "normal"] = "mean", seed: int = 0) -> T5:
    """A new model with `n_new` more real tokens (ids vocab_size .. vocab_size + n_new - 1).

    Old rows (and, untied, old head columns) are copied bit for bit, so logits of old tokens do not
    change; the table stays padded to the config's multiple. The default mean init starts new
    tokens at the centroid, which keeps early losses sane (transformers 5's default too).
    """
    if n_new < 0:
        raise InputError(f"extend_vocab: n_new must be >= 0, got {n_new}")
    if init not in ("mean", "normal"):
        raise InputError(f"extend_vocab: init must be 'mean' or 'normal', got {init!r}")
    cfg = model.config
    new_cfg = cfg.replace(vocab_size=cfg.vocab_size + n_new)
    params = model.params()
    key_shared, key_head = jax.random.split(jax.random.key(seed))
    old = params["shared"][: cfg.vocab_size]
    params["shared"] = _grow(
        params["shared"], cfg.vocab_size, new_cfg.padded_vocab_size, _new_rows(old, n_new, init, key_shared)
    )
    if "lm_head" in params:
        head = params["lm_head"].T
        new = _new_rows(head[: cfg.vocab_size], n_new, init, key_head)
        params["lm_head"] = _grow(head, cfg.vocab_size, new_cfg.padded_vocab_size, new).T
    log.info(
        "vocabulary %d -> %d tokens (%d rows with padding), new rows: %s",
        cfg.vocab_size,
        new_cfg.vocab_size,
        new_cfg.padded_vocab_size,
        init,
    )
    return T5.from_params(new_cfg, params)
