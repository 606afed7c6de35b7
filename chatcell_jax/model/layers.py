"""Pure functions for one T5 layer: RMSNorm, attention, feed-forward, relative position buckets.

Arrays in, arrays out; parameters arrive as plain arrays (one layer's slice of the stacked table).
Numerics: matmuls in the compute dtype, but norms, attention logits, softmax run in float32.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

# Masked attention scores. Far below any real score, yet finite so a fully masked row stays a
# (uniform) distribution instead of NaN.
MASKED_SCORE = -1e9


def rms_norm(x: jax.Array, scale: jax.Array, eps: float, dtype: jnp.dtype) -> jax.Array:
    """T5's LayerNorm: no mean subtraction, no bias; the variance in float32."""
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps)
    return (scale.astype(jnp.float32) * y).astype(dtype)


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    """Inverted dropout; `key=None` means deterministic (evaluation, decoding)."""
    if key is None or rate == 0.0:
        return x
    # Drawn 3-d at most ([..., last two dims merged]): XLA compiles 4-d random draws very slowly.
    shape = x.shape if x.ndim < 4 else x.shape[:-2] + (x.shape[-2] * x.shape[-1],)
    keep = jax.random.bernoulli(key, 1.0 - rate, shape).reshape(x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def relative_position_bucket(
    relative: jax.Array, bidirectional: bool, num_buckets: int, max_distance: int
) -> jax.Array:
    """T5's bucket of (key position - query position): exact for small distances, logarithmic up
    to `max_distance`, one bucket beyond. The encoder tells left from right (half the buckets
    each); the decoder only looks left. Same float32 arithmetic as transformers, so the buckets
    agree exactly."""
    relative = jnp.asarray(relative, jnp.int32)
    bucket = jnp.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (relative > 0).astype(jnp.int32) * num_buckets
        distance = jnp.abs(relative)
    else:
        distance = -jnp.minimum(relative, 0)
    max_exact = num_buckets // 2
    scaled = jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (scaled * (num_buckets - max_exact)).astype(jnp.int32)
    large = jnp.minimum(large, num_buckets - 1)
    return bucket + jnp.where(distance < max_exact, distance, large)


def position_bias(
    table: jax.Array, query_pos: jax.Array, key_pos: jax.Array, bidirectional: bool, max_distance: int
) -> jax.Array:
    """[heads, Tq, Tk] float32 bias from the [buckets, heads] table."""
    buckets = relative_position_bucket(
        key_pos[None, :] - query_pos[:, None], bidirectional, table.shape[0], max_distance
    )
    return jnp.transpose(jnp.take(table.astype(jnp.float32), buckets, axis=0), (2, 0, 1))


def attention(
    x: jax.Array,
    q_w: jax.Array,
    o_w: jax.Array,
    keys: jax.Array,
    values: jax.Array,
    bias: jax.Array | None,
    mask: jax.Array,
    dtype: jnp.dtype,
    rate: float,
    key: jax.Array | None,
) -> jax.Array:
    """Multi-head attention of queries from `x` [B, Tq, D] over precomputed keys/values
    [B, Tk, H, dk]. No 1/sqrt(d_kv) scaling: T5 folds it into the query weights.

    bias: [H, Tq, Tk] or None; mask: bool, broadcastable to [B, H, Tq, Tk].
    """
    q = jnp.einsum("btd,dhk->bthk", x, q_w.astype(dtype))
    scores = jnp.einsum("bqhk,bshk->bhqs", q, keys, preferred_element_type=jnp.float32)
    if bias is not None:
        scores = scores + bias[None]
    scores = jnp.where(mask, scores, MASKED_SCORE)
    probs = dropout(jax.nn.softmax(scores, axis=-1), rate, key)
    out = jnp.einsum("bhqs,bshk->bqhk", probs.astype(dtype), values)
    return jnp.einsum("bqhk,hkd->bqd", out, o_w.astype(dtype))


def cached_attention(
    x: jax.Array,
    q_w: jax.Array,
    o_w: jax.Array,
    keys: jax.Array,
    values: jax.Array,
    bias: jax.Array | None,
    mask: jax.Array,
    dtype: jnp.dtype,
    keys_time_last: bool,
) -> jax.Array:
    """One query position per row, x [N, D], over cached keys [B, H, G or 1, dk, T] (keys_time_last)
    or [B, H, G or 1, T, dk], and values [B, H, G or 1, T, dk].

    Rows are grouped by input, N = B x G (row b * G + g is member g of input b, e.g. beam g). With
    G entries on axis 2 each member reads its own keys/values (self-attention); with 1, the
    members of an input share them (cross-attention: the encoder keys/values of all its beams).
    Heads come before time so the dots read the cache as stored. Keys read straight from a cache
    should be time-last: stored [.., T, dk], XLA transposed them before every score dot, every
    step (half the step time of a t5-small greedy search); keys gathered per beam are [.., T, dk],
    the layout that gather writes fastest. Same numerics as `attention`: float32 scores and
    softmax, no 1/sqrt(d_kv) scaling.

    bias: broadcastable to [B, H, G, T] or None; mask: bool, broadcastable to [B, H, G, T].
    """
    b, h, _, _, dk = values.shape
    q = jnp.einsum("nd,dhk->nhk", x, q_w.astype(dtype)).reshape(b, -1, h, dk)  # [B, G, H, dk]
    shared = keys.shape[2] == 1 and q.shape[1] > 1
    if shared:
        keys, values = keys[:, :, 0], values[:, :, 0]
    member = "" if shared else "g"
    key_spec = "kt" if keys_time_last else "tk"
    q = jnp.swapaxes(q, 1, 2)  # [B, H, G, dk]: batch dimensions in the keys' order
    scores = jnp.einsum(f"bhgk,bh{member}{key_spec}->bhgt", q, keys, preferred_element_type=jnp.float32)
    if bias is not None:
        scores = scores + bias
    probs = jax.nn.softmax(jnp.where(mask, scores, MASKED_SCORE), axis=-1)
    # Output [B, H, G, dk], heads first as the dot produces it: asking for [B, G, H, dk] made XLA
    # run the dot transposed, which is slower on CPU.
    out = jnp.einsum(f"bhgt,bh{member}tk->bhgk", probs.astype(dtype), values)
    return jnp.einsum("bhgk,hkd->bgd", out, o_w.astype(dtype)).reshape(x.shape)


def project_kv(x: jax.Array, k_w: jax.Array, v_w: jax.Array, dtype: jnp.dtype) -> tuple[jax.Array, jax.Array]:
    """Keys and values [B, T, H, dk] for attention over `x` [B, T, D]."""
    return (jnp.einsum("btd,dhk->bthk", x, k_w.astype(dtype)), jnp.einsum("btd,dhk->bthk", x, v_w.astype(dtype)))


_ACTIVATIONS = {
    "relu": jax.nn.relu,
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),  # HF "gelu_new"
    "gelu_exact": lambda x: jax.nn.gelu(x, approximate=False),
}


def feed_forward(
    x: jax.Array, p: dict[str, jax.Array], activation: str, dtype: jnp.dtype, rate: float, key: jax.Array | None
) -> jax.Array:
    """wo(act(x wi)) or, gated (v1.1), wo(act(x wi_0) * (x wi_1)); dropout before wo as in HF."""
    act = _ACTIVATIONS[activation]
    if "wi" in p:
        h = act(x @ p["wi"].astype(dtype))
    else:
        h = act(x @ p["wi_0"].astype(dtype)) * (x @ p["wi_1"].astype(dtype))
    return dropout(h, rate, key) @ p["wo"].astype(dtype)
