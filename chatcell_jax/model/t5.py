"""T5 encoder-decoder: pure functions of `(config, params, ...)`, and `T5`, a thin NNX holder.

The functions are the model's API: `forward` (teacher-forced logits, training and scoring),
`encode`, `init_cache`, `decode_step` and `reorder_cache` (incremental decoding under jit). Every
caller (trainer, generator, HF conversion, benchmarks) passes a nested dict of arrays, e.g.

    params = model.params()                          # nested dict of arrays (a pytree)
    @jax.jit
    def greedy(params, input_ids, mask):
        enc = encode(cfg, params, input_ids, mask)
        cache = init_cache(cfg, params, batch, max_len, enc, mask)
        layers = split_decoder_layers(params)        # once, outside the loop (see its docstring)
        step_fn = lambda tok, cache, i: decode_step(cfg, layers, tok, cache, i)
        ...                                           # chatcell_jax.serve.decoding.generate(step_fn, cache, ...)

`T5` (an `nnx.Module`) only draws fresh weights, checks given ones against the parameter table and
hands out `params()`; it has no computation of its own, so there is one way to run the model.
Placement on a mesh is `chatcell_jax.model.sharding`'s job (its logical-axis rules read the
parameter table), not NNX metadata.

Layers are stacked ([L, ...] per weight) and run with `lax.scan` (or an unrolled loop with
`scan_layers=False`), optionally under `jax.checkpoint` (remat). Dropout takes an explicit PRNG key
(`dropout_rng`; None means no dropout), so no random state lives in the holder or its checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from chatcell_jax.errors import InputError
from chatcell_jax.model.config import T5Config
from chatcell_jax.model.layers import (
    attention,
    cached_attention,
    dropout,
    feed_forward,
    position_bias,
    project_kv,
    rms_norm,
)
from chatcell_jax.model.params import Params, ParamSpec, flatten, init_params, param_specs

# Logit of padded vocabulary columns: never sampled, never chosen, exp() == 0 in any softmax, and
# finite so sums and temperature scaling cannot produce NaN.
PAD_LOGIT = -1e30
Cache = dict[str, Any]  # see init_cache

_REMAT_POLICIES = {
    "minimal": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
    "full": jax.checkpoint_policies.nothing_saveable,
}


# --- helpers -------------------------------------------------------------------------------------


def _site(key: jax.Array | None, i: int) -> jax.Array | None:
    """A distinct dropout key per dropout site."""
    return None if key is None else jax.random.fold_in(key, i)


def _layer_keys(key: jax.Array | None, n: int) -> jax.Array | None:
    return None if key is None else jax.random.split(key, n)


def _run_layers(
    cfg: T5Config,
    layers: Params,
    x: jax.Array,
    keys: jax.Array | None,
    body: Callable[[jax.Array, Params, Any], jax.Array],
) -> jax.Array:
    """Apply `body(x, layer_params, layer_key)` for every layer of a stacked table."""
    if cfg.remat != "none":
        body = jax.checkpoint(body, policy=_REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers:
        x, _ = jax.lax.scan(lambda carry, xs: (body(carry, *xs), None), x, (layers, keys))
        return x
    n = jax.tree.leaves(layers)[0].shape[0]
    for i in range(n):
        x = body(x, jax.tree.map(lambda a: a[i], layers), None if keys is None else keys[i])
    return x


def _embed(cfg: T5Config, params: Params, ids: jax.Array) -> jax.Array:
    return jnp.take(params["shared"], ids, axis=0).astype(cfg.dtype)


def lm_logits(cfg: T5Config, params: Params, hidden: jax.Array) -> jax.Array:
    """float32 logits [..., padded_vocab]; padding columns are PAD_LOGIT.

    v1.0 (tied) scales by d_model**-0.5 and reuses the embedding table, as the original T5 did.
    """
    h = hidden.astype(jnp.float32)
    if cfg.tie_word_embeddings:
        logits = (h * cfg.d_model**-0.5) @ params["shared"].astype(jnp.float32).T
    else:
        logits = h @ params["lm_head"].astype(jnp.float32)
    real = np.arange(logits.shape[-1]) < cfg.vocab_size
    return jnp.where(real, logits, PAD_LOGIT)


# --- full (teacher-forced) forward ---------------------------------------------------------------


def _segment_mask(query_segments: jax.Array, key_segments: jax.Array) -> jax.Array:
    """[B, 1, Tq, Tk]: a query attends to the keys of its own packed example (segment 0 = padding)."""
    same = query_segments[:, :, None] == key_segments[:, None, :]
    return (same & (key_segments[:, None, :] != 0))[:, None]


def encode(
    cfg: T5Config,
    params: Params,
    input_ids: jax.Array,
    attention_mask: jax.Array,
    dropout_rng: jax.Array | None = None,
    segment_ids: jax.Array | None = None,
) -> jax.Array:
    """Encoder hidden states [B, S, D] (compute dtype). `dropout_rng=None`: no dropout.
    `segment_ids` [B, S] (packed rows, see chatcell_jax.train.packing) keep attention inside an example."""
    dtype, rate, eps = jnp.dtype(cfg.dtype), cfg.dropout_rate, cfg.layer_norm_epsilon
    stack = params["encoder"]
    keys = jax.random.split(dropout_rng, 3) if dropout_rng is not None else (None,) * 3
    x = dropout(_embed(cfg, params, input_ids), rate, keys[0])
    pos = jnp.arange(input_ids.shape[1])
    bias = position_bias(stack["relpos"], pos, pos, True, cfg.relative_attention_max_distance)
    mask = attention_mask.astype(bool)[:, None, None, :]
    if segment_ids is not None:
        mask = _segment_mask(segment_ids, segment_ids)

    def layer(x, p, key):
        h = rms_norm(x, p["self_norm"], eps, dtype)
        k, v = project_kv(h, p["k"], p["v"], dtype)
        x = x + dropout(attention(h, p["q"], p["o"], k, v, bias, mask, dtype, rate, _site(key, 0)), rate, _site(key, 1))
        h = rms_norm(x, p["mlp_norm"], eps, dtype)
        return x + dropout(feed_forward(h, p, cfg.activation, dtype, rate, _site(key, 2)), rate, _site(key, 3))

    x = _run_layers(cfg, stack["layers"], x, _layer_keys(keys[1], cfg.num_layers), layer)
    return dropout(rms_norm(x, stack["final_norm"], eps, dtype), rate, keys[2])


def decode(
    cfg: T5Config,
    params: Params,
    decoder_input_ids: jax.Array,
    encoder_hidden: jax.Array,
    attention_mask: jax.Array,
    decoder_attention_mask: jax.Array | None = None,
    dropout_rng: jax.Array | None = None,
    segment_ids: jax.Array | None = None,
    encoder_segment_ids: jax.Array | None = None,
) -> jax.Array:
    """Decoder hidden states [B, T, D] with causal self-attention and cross-attention. With packed
    rows, `segment_ids` [B, T] and `encoder_segment_ids` [B, S] pair each answer with its question."""
    dtype, rate, eps = jnp.dtype(cfg.dtype), cfg.dropout_rate, cfg.layer_norm_epsilon
    stack = params["decoder"]
    keys = jax.random.split(dropout_rng, 3) if dropout_rng is not None else (None,) * 3
    x = dropout(_embed(cfg, params, decoder_input_ids), rate, keys[0])
    pos = jnp.arange(decoder_input_ids.shape[1])
    bias = position_bias(stack["relpos"], pos, pos, False, cfg.relative_attention_max_distance)
    self_mask = (pos[None, :] <= pos[:, None])[None, None]
    if decoder_attention_mask is not None:
        self_mask = self_mask & decoder_attention_mask.astype(bool)[:, None, None, :]
    cross_mask = attention_mask.astype(bool)[:, None, None, :]
    if segment_ids is not None:
        self_mask = self_mask & _segment_mask(segment_ids, segment_ids)
        cross_mask = _segment_mask(segment_ids, encoder_segment_ids)
    encoder_hidden = encoder_hidden.astype(dtype)

    def layer(x, p, key):
        h = rms_norm(x, p["self_norm"], eps, dtype)
        k, v = project_kv(h, p["k"], p["v"], dtype)
        x = x + dropout(
            attention(h, p["q"], p["o"], k, v, bias, self_mask, dtype, rate, _site(key, 0)), rate, _site(key, 1)
        )
        h = rms_norm(x, p["cross_norm"], eps, dtype)
        k, v = project_kv(encoder_hidden, p["cross_k"], p["cross_v"], dtype)
        x = x + dropout(
            attention(h, p["cross_q"], p["cross_o"], k, v, None, cross_mask, dtype, rate, _site(key, 2)),
            rate,
            _site(key, 3),
        )
        h = rms_norm(x, p["mlp_norm"], eps, dtype)
        return x + dropout(feed_forward(h, p, cfg.activation, dtype, rate, _site(key, 4)), rate, _site(key, 5))

    x = _run_layers(cfg, stack["layers"], x, _layer_keys(keys[1], cfg.num_decoder_layers), layer)
    return dropout(rms_norm(x, stack["final_norm"], eps, dtype), rate, keys[2])


def forward(
    cfg: T5Config,
    params: Params,
    input_ids: jax.Array,
    attention_mask: jax.Array,
    decoder_input_ids: jax.Array,
    decoder_attention_mask: jax.Array | None = None,
    dropout_rng: jax.Array | None = None,
    encoder_segment_ids: jax.Array | None = None,
    decoder_segment_ids: jax.Array | None = None,
) -> jax.Array:
    """Teacher-forced logits [B, T, padded_vocab] float32. Segment ids: packed rows (both or neither)."""
    if (encoder_segment_ids is None) != (decoder_segment_ids is None):
        raise ValueError("packed rows need both encoder_segment_ids and decoder_segment_ids")
    k_enc, k_dec = (None, None) if dropout_rng is None else jax.random.split(dropout_rng)
    enc = encode(cfg, params, input_ids, attention_mask, k_enc, encoder_segment_ids)
    dec = decode(
        cfg,
        params,
        decoder_input_ids,
        enc,
        attention_mask,
        decoder_attention_mask,
        k_dec,
        decoder_segment_ids,
        encoder_segment_ids,
    )
    return lm_logits(cfg, params, dec)


# --- incremental decoding --------------------------------------------------------------------------
#
# Beam search never moves the self-attention cache. Each beam slot writes its new keys/values into
# its own cache row; `beam_path[b, k, t]` records which slot's row holds position t of the prefix
# now in slot k, and attention gathers keys/values along that path. A reorder is then a gather
# of that small int table. Measured on CPU (tiny shape, 64 rows, 100 tokens, per layer): moving
# the cache in place cost ~150 ms; the gather ~25 ms. One array per layer (updated in place),
# heads before slots and time (see layers.cached_attention).


def init_cache(
    cfg: T5Config,
    params: Params,
    batch_size: int,
    max_decode_length: int,
    encoder_hidden: jax.Array,
    attention_mask: jax.Array,
) -> Cache:
    """Decoding state for N = `batch_size` rows, a multiple K of the encoder batch B: row b * K + k
    is beam slot k of input b (the layout of `chatcell_jax.serve.decoding`; K = 1 without beams).

    self_k           tuple of L arrays [B, H, K, dk, T] when K == 1, else [B, H, K, T, dk]
    self_v           tuple of L arrays [B, H, K, T, dk]
                     zeros; slot k's row gets one position per decode_step (T = max_decode_length)
    beam_path        [B, K, T] int32  slot whose row holds position t of the prefix in slot k
    cross_k          tuple of L arrays [B, H, 1, dk, S]  encoder keys/values, computed here once
    cross_v          tuple of L arrays [B, H, 1, S, dk]  and shared by the beams of an input
    (keys read as stored are time-last, keys gathered along beam paths time-first: the layouts
    the attention dots and the gather run fastest with; see layers.cached_attention)
    encoder_mask     [B, 1, 1, S] bool
    """
    dtype = jnp.dtype(cfg.dtype)
    b = encoder_hidden.shape[0]
    if batch_size % b:
        raise ValueError(f"batch_size {batch_size} is not a multiple of the encoder batch {b}")
    beams = batch_size // b
    layers = params["decoder"]["layers"]
    enc = encoder_hidden.astype(dtype)
    cross = lambda w, spec: tuple(jnp.einsum(spec, enc, w[i].astype(dtype))[:, :, None] for i in range(w.shape[0]))
    zeros = lambda *shape: tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_decoder_layers))
    h, t, dk = cfg.num_heads, max_decode_length, cfg.d_kv
    keys_shape = (b, h, beams, dk, t) if beams == 1 else (b, h, beams, t, dk)
    return {
        "self_k": zeros(*keys_shape),
        "self_v": zeros(b, h, beams, t, dk),
        "beam_path": jnp.zeros((b, beams, t), jnp.int32),
        "cross_k": cross(layers["cross_k"], "bsd,dhk->bhks"),
        "cross_v": cross(layers["cross_v"], "bsd,dhk->bhsk"),
        "encoder_mask": attention_mask.astype(bool)[:, None, None, :],
    }


def reorder_cache(cache: Cache, indices: jax.Array) -> Cache:
    """Beam reordering: slot n continues the prefix of row `indices[n]`, which must be a row of the
    same input (beam search never moves a beam to another input). Only `beam_path` moves."""
    path = cache["beam_path"]
    b, k, t = path.shape
    return dict(cache, beam_path=jnp.take(path.reshape(b * k, t), indices, axis=0).reshape(b, k, t))


def decode_step(
    cfg: T5Config, params: Params, token_ids: jax.Array, cache: Cache, step_index: jax.Array | int
) -> tuple[jax.Array, Cache]:
    """One decoder position for every row: token_ids [N] sit at position `step_index` (a traced
    scalar is fine). Returns logits [N, padded_vocab] float32 and the cache with that position's
    keys/values written. Shapes never change, so it runs inside `lax.while_loop`. `params` may have
    its decoder layers stacked or split (`split_decoder_layers`, faster inside a loop)."""
    dtype, eps = jnp.dtype(cfg.dtype), cfg.layer_norm_epsilon
    stack = params["decoder"]
    step = jnp.asarray(step_index, jnp.int32)
    b, beams, length = cache["beam_path"].shape
    slots = jnp.arange(beams, dtype=jnp.int32)
    # This position of every slot's prefix is the slot's own new entry.
    path = jax.lax.dynamic_update_slice_in_dim(
        cache["beam_path"], jnp.broadcast_to(slots[:, None], (b, beams, 1)), step, axis=2
    )
    key_pos = jnp.arange(length)
    self_mask = key_pos <= step
    bias = position_bias(stack["relpos"], step[None], key_pos, False, cfg.relative_attention_max_distance)[None]
    x = _embed(cfg, params, token_ids)  # [N, D]
    self_k, self_v = list(cache["self_k"]), list(cache["self_v"])
    # Layers unrolled: each reads and updates its own cache arrays in place.
    layers = stack["layers"]
    for i in range(cfg.num_decoder_layers):
        p = layers[i] if isinstance(layers, (tuple, list)) else jax.tree.map(lambda a: a[i], layers)
        h = rms_norm(x, p["self_norm"], eps, dtype)
        self_k[i] = _write_position(self_k[i], _project(h, p["k"], dtype), step, 4 if beams == 1 else 3)
        self_v[i] = _write_position(self_v[i], _project(h, p["v"], dtype), step, 3)
        x = x + _self_attention(h, p, self_k[i], self_v[i], path, bias, self_mask, step, dtype)
        h = rms_norm(x, p["cross_norm"], eps, dtype)
        x = x + cached_attention(
            h,
            p["cross_q"],
            p["cross_o"],
            cache["cross_k"][i],
            cache["cross_v"][i],
            None,
            cache["encoder_mask"],
            dtype,
            keys_time_last=True,
        )
        h = rms_norm(x, p["mlp_norm"], eps, dtype)
        x = x + feed_forward(h, p, cfg.activation, dtype, 0.0, None)
    hidden = rms_norm(x, stack["final_norm"], eps, dtype)
    new_cache = dict(cache, self_k=tuple(self_k), self_v=tuple(self_v), beam_path=path)
    return lm_logits(cfg, params, hidden), new_cache


def split_decoder_layers(params: Params) -> Params:
    """`params` with the decoder's stacked [L, ...] weights split into a tuple of L per-layer dicts,
    which `decode_step` also accepts. Call it once, outside the decoding loop: slicing the stacked
    weights inside the loop copied every layer's weights on every step (XLA does not hoist the
    slices; measured: ~40 % of a t5-small greedy search on CPU)."""
    layers = params["decoder"]["layers"]
    if isinstance(layers, (tuple, list)):
        return params
    n = jax.tree.leaves(layers)[0].shape[0]
    split = tuple(jax.tree.map(lambda a: a[i], layers) for i in range(n))
    return {**params, "decoder": {**params["decoder"], "layers": split}}


def _project(h: jax.Array, w: jax.Array, dtype: jnp.dtype) -> jax.Array:
    return jnp.einsum("nd,dhk->nhk", h, w.astype(dtype))


def _self_attention(
    h: jax.Array,
    p: Params,
    keys: jax.Array,
    values: jax.Array,
    path: jax.Array,
    bias: jax.Array,
    mask: jax.Array,
    step: jax.Array,
    dtype: jnp.dtype,
) -> jax.Array:
    """Attention of each row's new position over its cached prefix, reading only the first `span`
    positions of the cache: the shortest span of `attention_spans(T)` that covers `step`.

    Positions after `step` are masked anyway; skipping them does not change the answer, and
    halves on average the keys/values gathered along beam paths and the attention dots (one
    `lax.switch` branch per span, and only the taken branch runs)."""
    time_last = keys.shape[2] == 1
    spans = attention_spans(values.shape[3])

    def over(span: int):
        def attend(h, keys, values, path, bias, mask):
            k = keys[..., :span] if time_last else keys[..., :span, :]
            k, v = _along_path(k, path[..., :span]), _along_path(values[..., :span, :], path[..., :span])
            return cached_attention(
                h, p["q"], p["o"], k, v, bias[..., :span], mask[..., :span], dtype, keys_time_last=time_last
            )

        return attend

    operands = (h, keys, values, path, bias, mask)
    if len(spans) == 1:
        return over(spans[0])(*operands)
    branch = jnp.sum(jnp.asarray(spans) <= step)  # the first span longer than step
    return jax.lax.switch(branch, [over(span) for span in spans], *operands)


def attention_spans(length: int) -> tuple[int, ...]:
    """Cache prefixes self-attention reads: about a quarter, a half, three quarters and all of
    `length`, multiples of 8; a short cache is read whole."""
    if length < 32:
        return (length,)
    return tuple(sorted({min(length, 8 * -(-length * quarters // 32)) for quarters in (1, 2, 3)} | {length}))


def _along_path(cache: jax.Array, path: jax.Array) -> jax.Array:
    """Each slot's prefix from a [B, H, K, T, dk] cache: out[b, :, k, t] = cache[b, :, path[b, k, t], t]."""
    if cache.shape[2] == 1:
        return cache
    b, h, _, t, _ = cache.shape
    return cache[jnp.arange(b)[:, None, None, None], jnp.arange(h)[None, :, None, None], path[:, None], jnp.arange(t)]


def _write_position(cache: jax.Array, new: jax.Array, step: jax.Array, time_axis: int) -> jax.Array:
    """Row n = b * K + k of `new` [N, H, dk] into slot k of input b at position `step` of a
    [B, H, K, ...] cache with time on `time_axis` (3 or 4)."""
    b, h, k = cache.shape[:3]
    update = jnp.expand_dims(jnp.transpose(new.reshape(b, k, h, -1), (0, 2, 1, 3)), time_axis)
    return jax.lax.dynamic_update_slice_in_dim(cache, update.astype(cache.dtype), step, axis=time_axis)


_jit_init = jax.jit(init_params, static_argnums=0)


def _shape_config(cfg: T5Config) -> T5Config:
    """The config with fields that do not affect initial values reset, so configs that differ only
    in numerics or regularisation share one compiled initialiser."""
    return cfg.replace(dropout_rate=0.0, dtype="float32", scan_layers=True, remat="none", layer_norm_epsilon=1e-6)


# --- the NNX module --------------------------------------------------------------------------------


class _Group(nnx.Module):
    """A named group of parameters (a stack, its layers): attributes only, no computation."""

    def __init__(self, specs: dict[str, Any], values: dict[str, Any]):
        for name, spec in specs.items():
            setattr(self, name, _make(spec, values[name]))


def _make(spec: ParamSpec | dict, value: Any) -> nnx.Module | nnx.Param:
    if isinstance(spec, dict):
        return _Group(spec, value)
    return nnx.Param(value)


class T5(nnx.Module):
    """The parameters of a T5 v1.0 / v1.1 model and its config. `T5(config, rngs=nnx.Rngs(seed))`
    draws fresh weights, `T5.from_params` wraps given ones; run it with the functions above on
    `params()`."""

    def __init__(self, config: T5Config, *, rngs: nnx.Rngs):
        self.config = config
        # jit: one compiled program instead of hundreds of eager random ops (the config is static).
        values = _jit_init(_shape_config(config), rngs.params())
        for name, spec in param_specs(config).items():
            setattr(self, name, _make(spec, values[name]))

    @classmethod
    def from_params(cls, config: T5Config, params: Params) -> T5:
        """A module holding `params` (checked against the parameter table, no random init)."""
        check_params(config, params)
        model = nnx.eval_shape(lambda: cls(config, rngs=nnx.Rngs(0)))
        state = nnx.state(model, nnx.Param)
        nnx.replace_by_pure_dict(state, params)
        nnx.update(model, state)
        return model

    def params(self) -> Params:
        """Nested dict of arrays (the layout of `param_specs`): the functional API's input."""
        return nnx.to_pure_dict(nnx.state(self, nnx.Param))


def check_params(config: T5Config, params: Params) -> None:
    """InputError naming the first missing, unexpected or mis-shaped tensor."""
    want = {k: s.shape for k, s in flatten(param_specs(config)).items()}
    have = {k: tuple(np.shape(v)) for k, v in flatten(params).items()}
    for name in sorted(want):
        if name not in have:
            raise InputError(f"parameter {name!r} is missing (expected shape {want[name]})")
        if have[name] != want[name]:
            raise InputError(f"parameter {name!r} has shape {have[name]}, the config needs {want[name]}")
    extra = sorted(set(have) - set(want))
    if extra:
        raise InputError(
            f"unexpected parameter {extra[0]!r} for this config (tie_word_embeddings="
            f"{config.tie_word_embeddings}, feed_forward_proj={config.feed_forward_proj!r})"
        )
