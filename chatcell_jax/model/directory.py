"""Our model directory, and loading a model from any model reference.

Format (version 1):

    MODEL_DIR/
      model_config.json    {"format": "chatcell-jax-model", "version": 1, "config": {T5Config fields}}
      params.safetensors   one tensor per weight, named by its path ("encoder/layers/q"), with the
                           padded vocabulary and the stacked [layers, ...] layout
      tokenizer/           optional: the HF tokenizer files the model was trained with

safetensors rather than an Orbax tree: one self-describing file, readable without JAX, bit-exact.
Training checkpoints (optimizer state, data position) are Orbax and live elsewhere.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import jax
import numpy as np

from chatcell_jax.errors import InputError
from chatcell_jax.hf.files import atomic_dir, copy_tokenizer, load_hf_weights, read_json, tokenizer_files
from chatcell_jax.hf.mapping import hf_to_params, resolve_head
from chatcell_jax.model.config import T5Config
from chatcell_jax.model.params import Params, flatten, unflatten
from chatcell_jax.model.t5 import T5

log = logging.getLogger(__name__)

FORMAT = "chatcell-jax-model"
CONFIG_FILE = "model_config.json"
PARAMS_FILE = "params.safetensors"
TOKENIZER_DIR = "tokenizer"


def save_model(
    model: T5, config: T5Config | None, out_dir: str | Path, tokenizer_dir: str | Path | None = None
) -> Path:
    """Write `model` as a model directory (atomically). `config` defaults to `model.config`."""
    from safetensors.numpy import save_file

    config = config or model.config
    out_dir = Path(out_dir)
    flat = {k: np.ascontiguousarray(jax.device_get(v)) for k, v in flatten(model.params()).items()}
    with atomic_dir(out_dir, CONFIG_FILE) as tmp:
        save_file(flat, str(tmp / PARAMS_FILE), metadata={"format": FORMAT})
        if tokenizer_dir is not None:
            copy_tokenizer(Path(tokenizer_dir), tmp / TOKENIZER_DIR)
        # Written last: its presence marks a complete directory.
        (tmp / CONFIG_FILE).write_text(
            json.dumps({"format": FORMAT, "version": 1, "config": config.to_dict()}, indent=2) + "\n"
        )
    log.info("saved model (%s) to %s", _describe(config), out_dir)
    return out_dir


def _describe(cfg: T5Config) -> str:
    return (
        f"d_model={cfg.d_model}, layers={cfg.num_layers}+{cfg.num_decoder_layers}, vocab={cfg.vocab_size}, "
        f"{'tied v1.0' if cfg.tie_word_embeddings else 'untied'} {cfg.feed_forward_proj}"
    )


def _load_ours(model_dir: Path) -> tuple[T5Config, Params]:
    from safetensors.numpy import load_file

    meta = read_json(model_dir / CONFIG_FILE)
    if meta.get("format") != FORMAT or meta.get("version") != 1:
        raise InputError(
            f"{model_dir / CONFIG_FILE} is not a chatcell-jax model config (format {meta.get('format')!r}, "
            f"version {meta.get('version')!r})"
        )
    config = T5Config.from_dict(meta["config"])
    if not (model_dir / PARAMS_FILE).is_file():
        raise InputError(f"{model_dir} has {CONFIG_FILE} but no {PARAMS_FILE}")
    try:
        flat = load_file(str(model_dir / PARAMS_FILE))
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise InputError(f"{model_dir / PARAMS_FILE} cannot be read: {err}") from None
    return config, unflatten(flat)


def read_hf(hf_dir: Path, **overrides) -> tuple[T5Config, Params]:
    """Config and (numpy) parameters of an HF T5 directory. `overrides` set our own config
    fields (dtype, scan_layers, ...)."""
    config = T5Config.from_hf_config(read_json(hf_dir / "config.json")).replace(**overrides)
    config, sd = resolve_head(config, load_hf_weights(hf_dir))
    return config, hf_to_params(sd, config)


def is_model_dir(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file()


def load_model(
    model_ref: str | Path, mesh: jax.sharding.Mesh | None = None, **overrides
) -> tuple[T5Config, T5, Path | None]:
    """(config, model, tokenizer_dir or None) from our model directory or an HF T5 directory.

    With `mesh`, parameters are placed sharded by the logical axis rules. `overrides` replace
    config fields that do not change the weights (dtype, scan_layers, remat, dropout_rate).
    """
    path = Path(model_ref)
    if is_model_dir(path):
        config, params = _load_ours(path)
        config = config.replace(**overrides)
        tokenizer = path / TOKENIZER_DIR if (path / TOKENIZER_DIR).is_dir() else None
    elif (path / "config.json").is_file():
        config, params = read_hf(path, **overrides)
        tokenizer = path if tokenizer_files(path) else None
    else:
        raise InputError(
            f"{path} is not a model: expected our model directory ({CONFIG_FILE}) or a Hugging Face "
            "directory (config.json + model.safetensors)"
        )
    if mesh is not None:
        from chatcell_jax.model.sharding import shard_params

        params = shard_params(params, config, mesh)
    return config, T5.from_params(config, params), tokenizer
