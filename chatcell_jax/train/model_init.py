"""The model a run trains: a preset from scratch, or a pretrained model grown by the new tokens.

Either way the parameters end up on the mesh with the shardings of `chatcell_jax.model.sharding`, and
the vocabulary (the tokenizer's length) is padded to a multiple that divides the model axis.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp

from chatcell_jax.errors import InputError
from chatcell_jax.model import extend_vocab, load_preset
from chatcell_jax.model.config import T5Config
from chatcell_jax.model.params import Params
from chatcell_jax.model.sharding import create_sharded_model, fit_config, shard_params
from chatcell_jax.train.config import TrainConfig


def _overrides(config: TrainConfig) -> dict:
    """Model fields the run config sets: numerics and regularisation, never shapes."""
    return {
        "dtype": config.dtype,
        "dropout_rate": config.dropout_rate,
        "remat": config.remat,
        "scan_layers": config.scan_layers,
    }


def _check_vocab(base: int, tokenizer_size: int) -> None:
    if tokenizer_size < base:
        raise InputError(
            f"the tokenizer has {tokenizer_size} ids but the model {base}; build the tokenizer on this "
            "model's base (chatcell tokenizer --base MODEL)"
        )


def _repad(params: Params, old: T5Config, new: T5Config) -> Params:
    """Embedding rows (and untied head columns) re-padded from old to new padded vocabulary size."""

    def fit(table: jax.Array, axis: int) -> jax.Array:
        table = jax.lax.slice_in_dim(table, 0, old.vocab_size, axis=axis)
        pad = [(0, 0)] * table.ndim
        pad[axis] = (0, new.padded_vocab_size - old.vocab_size)
        return jnp.pad(table, pad)

    params = dict(params)
    params["shared"] = fit(params["shared"], 0)
    if "lm_head" in params:
        params["lm_head"] = fit(params["lm_head"], 1)
    return params


def build_params(config: TrainConfig, tokenizer_size: int, mesh: jax.sharding.Mesh) -> tuple[T5Config, Params]:
    """(config, sharded params) of the model to train."""
    path = Path(config.model)
    if not path.is_dir():
        cfg = fit_config(load_preset(config.model, vocab_size=tokenizer_size, **_overrides(config)), mesh)
        return cfg, create_sharded_model(cfg, mesh, config.seed).params()
    from chatcell_jax.model.directory import load_model

    loaded_cfg, model, _ = load_model(path, **_overrides(config))
    _check_vocab(loaded_cfg.vocab_size, tokenizer_size)
    if tokenizer_size > loaded_cfg.vocab_size:
        model = extend_vocab(model, tokenizer_size - loaded_cfg.vocab_size, init=config.vocab_init, seed=config.seed)
    cfg = fit_config(model.config, mesh)
    params = model.params()
    if model.config.padded_vocab_size != cfg.padded_vocab_size:
        params = _repad(params, model.config, cfg)
    return cfg, shard_params(params, cfg, mesh)
