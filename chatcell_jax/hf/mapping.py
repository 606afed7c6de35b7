"""Weight names and layouts between our parameter table and transformers' T5 state dict.

HF keeps one nn.Linear per layer, weight [out, in]; we keep one stacked array per weight with the
input dimension first and heads split out: q/k/v [L, D, H, dk], o [L, H, dk, D], wi [L, D, F],
wo [L, F, D]. Our vocabulary is padded; HF's is not. The relative-position tables sit in block 0
of each HF stack and are shared by all blocks, as here.
"""

from __future__ import annotations

import logging

import jax.numpy as jnp
import numpy as np

from chatcell_jax.errors import InputError
from chatcell_jax.model.config import T5Config
from chatcell_jax.model.params import Params, flatten, param_specs, unflatten

log = logging.getLogger(__name__)

# HF names that carry nothing of their own: copies of `shared`, and a cross-attention bias old
# checkpoints carry but T5 never uses.
IGNORED_HF_KEYS = (
    "encoder.embed_tokens.weight",
    "decoder.embed_tokens.weight",
    "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",
)


def _layer_names(cfg: T5Config, decoder: bool) -> dict[str, tuple[str, str]]:
    """Our layer weight -> (HF name inside block i, kind of layout transform)."""
    names = {"self_norm": ("layer.0.layer_norm.weight", "norm")}
    for w in "qkv":
        names[w] = (f"layer.0.SelfAttention.{w}.weight", "in_heads")
    names["o"] = ("layer.0.SelfAttention.o.weight", "out_heads")
    ff = 1
    if decoder:
        names["cross_norm"] = ("layer.1.layer_norm.weight", "norm")
        for w in "qkv":
            names[f"cross_{w}"] = (f"layer.1.EncDecAttention.{w}.weight", "in_heads")
        names["cross_o"] = ("layer.1.EncDecAttention.o.weight", "out_heads")
        ff = 2
    names["mlp_norm"] = (f"layer.{ff}.layer_norm.weight", "norm")
    for w in (("wi_0", "wi_1") if cfg.gated else ("wi",)) + ("wo",):
        names[w] = (f"layer.{ff}.DenseReluDense.{w}.weight", "linear")
    return names


def _to_ours(w: np.ndarray, kind: str, cfg: T5Config) -> np.ndarray:
    h, k, d = cfg.num_heads, cfg.d_kv, cfg.d_model
    if kind == "in_heads":
        return w.T.reshape(d, h, k)
    if kind == "out_heads":
        return w.T.reshape(h, k, d)
    return w.T if kind == "linear" else w


def _to_hf(w: np.ndarray, kind: str) -> np.ndarray:
    if kind == "in_heads":
        return w.reshape(w.shape[0], -1).T
    if kind == "out_heads":
        return w.reshape(-1, w.shape[-1]).T
    return w.T if kind == "linear" else w


def _hf_shape(shape: tuple[int, ...], kind: str) -> tuple[int, ...]:
    if kind == "in_heads":
        return (shape[1] * shape[2], shape[0])
    if kind == "out_heads":
        return (shape[2], shape[0] * shape[1])
    return shape[::-1] if kind == "linear" else shape


def _stacks(cfg: T5Config):
    yield "encoder", cfg.num_layers, False
    yield "decoder", cfg.num_decoder_layers, True


def _take(sd: dict[str, np.ndarray], name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name not in sd:
        raise InputError(
            f"checkpoint has no tensor {name!r} (expected shape {shape}); is it a complete T5 "
            "checkpoint matching config.json?"
        )
    w = sd[name]
    if tuple(w.shape) != tuple(shape):
        raise InputError(f"tensor {name!r} has shape {tuple(w.shape)}, config.json implies {tuple(shape)}")
    return w


def _pad_rows(w: np.ndarray, rows: int) -> np.ndarray:
    out = np.zeros((rows,) + w.shape[1:], w.dtype)
    out[: w.shape[0]] = w
    return out


def hf_to_params(sd: dict[str, np.ndarray], cfg: T5Config) -> Params:
    """Our (padded, stacked) parameters from an HF state dict; `cfg.tie_word_embeddings` must
    already say whether `lm_head.weight` is used (see `resolve_head`)."""
    specs = flatten(param_specs(cfg))
    dtype = jnp.dtype(cfg.param_dtype)  # numpy-compatible, bfloat16 included (ml_dtypes)
    v, d = cfg.vocab_size, cfg.d_model
    flat: dict[str, np.ndarray] = {}
    shared = sd.get("shared.weight", sd.get("encoder.embed_tokens.weight"))
    if shared is None:
        raise InputError("checkpoint has no tensor 'shared.weight' (the embedding table)")
    flat["shared"] = _pad_rows(_take({"shared.weight": shared}, "shared.weight", (v, d)), cfg.padded_vocab_size)
    if not cfg.tie_word_embeddings:
        flat["lm_head"] = _pad_rows(_take(sd, "lm_head.weight", (v, d)), cfg.padded_vocab_size).T
    for stack, n, decoder in _stacks(cfg):
        relpos = f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
        flat[f"{stack}/relpos"] = _take(sd, relpos, specs[f"{stack}/relpos"].shape)
        flat[f"{stack}/final_norm"] = _take(sd, f"{stack}.final_layer_norm.weight", (d,))
        for ours, (hf, kind) in _layer_names(cfg, decoder).items():
            shape = specs[f"{stack}/layers/{ours}"].shape[1:]
            flat[f"{stack}/layers/{ours}"] = np.stack(
                [_to_ours(_take(sd, f"{stack}.block.{i}.{hf}", _hf_shape(shape, kind)), kind, cfg) for i in range(n)]
            )
    _warn_unused(sd, cfg)
    return unflatten({k: np.ascontiguousarray(a.astype(dtype)) for k, a in flat.items()})


def params_to_hf(params: Params, cfg: T5Config) -> dict[str, np.ndarray]:
    """HF state dict (numpy, real vocabulary only). Tied models get no `lm_head.weight`, so that
    transformers ties it to `shared.weight` and applies the v1.0 rescale."""
    flat = {k: np.asarray(a) for k, a in flatten(params).items()}
    v = cfg.vocab_size
    sd = {"shared.weight": flat["shared"][:v]}
    if not cfg.tie_word_embeddings:
        sd["lm_head.weight"] = flat["lm_head"][:, :v].T
    for stack, n, decoder in _stacks(cfg):
        sd[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = flat[f"{stack}/relpos"]
        sd[f"{stack}.final_layer_norm.weight"] = flat[f"{stack}/final_norm"]
        for ours, (hf, kind) in _layer_names(cfg, decoder).items():
            for i in range(n):
                sd[f"{stack}.block.{i}.{hf}"] = _to_hf(flat[f"{stack}/layers/{ours}"][i], kind)
    return {k: np.ascontiguousarray(a) for k, a in sd.items()}


def _warn_unused(sd: dict[str, np.ndarray], cfg: T5Config) -> None:
    used = set(params_to_hf_names(cfg)) | set(IGNORED_HF_KEYS) | {"lm_head.weight"}
    unused = sorted(set(sd) - used)
    if unused:
        log.warning("ignoring %d checkpoint tensors T5 does not use, e.g. %s", len(unused), unused[:3])


def params_to_hf_names(cfg: T5Config) -> list[str]:
    names = ["shared.weight"] + ([] if cfg.tie_word_embeddings else ["lm_head.weight"])
    for stack, n, decoder in _stacks(cfg):
        names += [
            f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
            f"{stack}.final_layer_norm.weight",
        ]
        names += [f"{stack}.block.{i}.{hf}" for hf, _ in _layer_names(cfg, decoder).values() for i in range(n)]
    return names


def resolve_head(cfg: T5Config, sd: dict[str, np.ndarray]) -> tuple[T5Config, dict[str, np.ndarray]]:
    """Decide tied or untied from the config *and* the tensors, as transformers 5 does.

    - rescale on, no separate head (or one equal to `shared`): v1.0, tied.
    - rescale off, own head: v1.1, untied.
    - rescale off, no head: transformers ties the head to `shared` without rescale; we untie it
      with a copy of `shared` (identical logits).
    - rescale on, a different head: transformers untie it but still rescale; we fold the
      d_model**-0.5 into the head (identical up to rounding).
    """
    head, shared = sd.get("lm_head.weight"), sd.get("shared.weight", sd.get("encoder.embed_tokens.weight"))
    has_own_head = (
        head is not None and shared is not None and not (head.shape == shared.shape and np.array_equal(head, shared))
    )
    if cfg.tie_word_embeddings and not has_own_head:
        return cfg, sd
    sd = dict(sd)
    if cfg.tie_word_embeddings:
        log.warning("checkpoint rescales decoder outputs but has its own lm_head: folding d_model**-0.5 into it")
        sd["lm_head.weight"] = (head.astype(np.float32) * cfg.d_model**-0.5).astype(head.dtype)
    elif head is None:
        if shared is None:
            return cfg, sd
        log.info("untied config without lm_head.weight: using a copy of shared.weight as the head")
        sd["lm_head.weight"] = shared
    return cfg.replace(tie_word_embeddings=False), sd
