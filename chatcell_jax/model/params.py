"""The parameter table: every weight's path, shape, logical axes and initialiser, in one place.

Initialisation, sharding, HF conversion, parameter counts and checkpoint shape checks all read this
table, so they cannot drift apart. Layer weights are stacked with a leading `layers` axis (one
array per weight for the whole stack), which is what `lax.scan` runs over.

Initialisers follow transformers' `T5PreTrainedModel._init_weights` (factor 1.0): embeddings and the
untied head N(0, 1); q N(0, (d_model * d_kv)^-0.5); k, v N(0, d_model^-0.5); o N(0, (heads *
d_kv)^-0.5); wi N(0, d_model^-0.5); wo N(0, d_ff^-0.5); relative bias N(0, d_model^-0.5); norms 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from chatcell_jax.model.config import T5Config

Params = dict[str, Any]  # nested {name: {name: array}}, the layout of `T5.params()`


@dataclass(frozen=True)
class ParamSpec:
    shape: tuple[int, ...]
    axes: tuple[str, ...]  # logical axis names (t5x vocabulary), one per dimension
    std: float | None  # normal init scale; None means ones (norm scales)


def _attention(prefix: str, cfg: T5Config, n: int) -> dict[str, ParamSpec]:
    d, h, k = cfg.d_model, cfg.num_heads, cfg.d_kv
    qkv_axes = ("layers", "embed", "heads", "kv")
    return {
        f"{prefix}q": ParamSpec((n, d, h, k), qkv_axes, (d * k) ** -0.5),
        f"{prefix}k": ParamSpec((n, d, h, k), qkv_axes, d**-0.5),
        f"{prefix}v": ParamSpec((n, d, h, k), qkv_axes, d**-0.5),
        f"{prefix}o": ParamSpec((n, h, k, d), ("layers", "heads", "kv", "embed"), (h * k) ** -0.5),
    }


def _mlp(cfg: T5Config, n: int) -> dict[str, ParamSpec]:
    d, f = cfg.d_model, cfg.d_ff
    wi = ParamSpec((n, d, f), ("layers", "embed", "mlp"), d**-0.5)
    specs = {"wi_0": wi, "wi_1": wi} if cfg.gated else {"wi": wi}
    specs["wo"] = ParamSpec((n, f, d), ("layers", "mlp", "embed"), f**-0.5)
    return specs


def _norm(n: int | None, d: int) -> ParamSpec:
    if n is None:
        return ParamSpec((d,), ("embed",), None)
    return ParamSpec((n, d), ("layers", "embed"), None)


def _stack(cfg: T5Config, n: int, decoder: bool) -> dict[str, Any]:
    d = cfg.d_model
    layers: dict[str, ParamSpec] = {"self_norm": _norm(n, d), **_attention("", cfg, n)}
    if decoder:
        layers["cross_norm"] = _norm(n, d)
        layers.update(_attention("cross_", cfg, n))
    layers["mlp_norm"] = _norm(n, d)
    layers.update(_mlp(cfg, n))
    relpos = ParamSpec((cfg.relative_attention_num_buckets, cfg.num_heads), ("relpos_buckets", "heads"), d**-0.5)
    return {"relpos": relpos, "layers": layers, "final_norm": _norm(None, d)}


def param_specs(cfg: T5Config, vocab_rows: int | None = None) -> dict[str, Any]:
    """Nested table of ParamSpec; `vocab_rows` defaults to the padded vocabulary."""
    v = cfg.padded_vocab_size if vocab_rows is None else vocab_rows
    specs: dict[str, Any] = {"shared": ParamSpec((v, cfg.d_model), ("vocab", "embed"), 1.0)}
    specs["encoder"] = _stack(cfg, cfg.num_layers, decoder=False)
    specs["decoder"] = _stack(cfg, cfg.num_decoder_layers, decoder=True)
    if not cfg.tie_word_embeddings:
        specs["lm_head"] = ParamSpec((cfg.d_model, v), ("embed", "vocab"), 1.0)
    return specs


def flatten(tree: dict[str, Any]) -> dict[str, Any]:
    """{'encoder': {'layers': {'q': x}}} -> {'encoder/layers/q': x} (our weight names)."""
    return traverse_util.flatten_dict(tree, sep="/")


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    return traverse_util.unflatten_dict(flat, sep="/")


def init_params(cfg: T5Config, key: jax.Array) -> Params:
    """Random parameters. Each weight draws from fold_in(key, its index in the table), so values
    do not depend on how (or whether) the arrays are sharded."""
    dtype = jnp.dtype(cfg.param_dtype)
    flat = {}
    for i, (path, spec) in enumerate(sorted(flatten(param_specs(cfg)).items())):
        if spec.std is None:
            flat[path] = jnp.ones(spec.shape, dtype)
        else:
            flat[path] = (spec.std * _normal(jax.random.fold_in(key, i), spec)).astype(dtype)
    params = unflatten(flat)
    return zero_vocab_padding(params, cfg)


def _normal(key: jax.Array, spec: ParamSpec) -> jax.Array:
    """N(0, 1) of the spec's shape. Attention weights are drawn with heads and head_dim merged:
    same distribution, and XLA compiles 4-d threefry draws very slowly (seconds each on CPU).
    Heads stay the major half of the merged dimension, so a heads sharding carries over."""
    shape = spec.shape
    if "kv" in spec.axes:
        i = spec.axes.index("kv")
        shape = shape[: i - 1] + (shape[i - 1] * shape[i],) + shape[i + 1 :]
    return jax.random.normal(key, shape, jnp.float32).reshape(spec.shape)


def zero_vocab_padding(params: Params, cfg: T5Config) -> Params:
    """Padding rows of the table (and columns of an untied head) are zeros: they are never looked
    up, their logits are masked, and zeros keep exports and vocabulary means clean."""
    real = cfg.vocab_size
    out = dict(params)
    out["shared"] = params["shared"].at[real:].set(0)
    if "lm_head" in params:
        out["lm_head"] = params["lm_head"].at[:, real:].set(0)
    return out


def count_params(cfg: T5Config, padded: bool = False) -> int:
    """Number of parameters; by default with the real vocabulary, as transformers counts them."""
    rows = cfg.padded_vocab_size if padded else cfg.vocab_size
    return int(sum(np.prod(s.shape) for s in flatten(param_specs(cfg, rows)).values()))
