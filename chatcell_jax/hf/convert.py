"""import-hf / export-hf: between HF T5 directories and our model directories."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import jax

from chatcell_jax.errors import InputError
from chatcell_jax.hf.files import atomic_dir, copy_tokenizer, tokenizer_files
from chatcell_jax.hf.mapping import params_to_hf
from chatcell_jax.model.config import T5Config
from chatcell_jax.model.directory import load_model, read_hf, save_model
from chatcell_jax.model.t5 import T5

log = logging.getLogger(__name__)


def import_hf(hf_dir: str | Path, out_dir: str | Path) -> Path:
    """Convert an HF T5 directory (config.json, weights, tokenizer) into our model directory."""
    hf_dir = Path(hf_dir)
    if not (hf_dir / "config.json").is_file():
        raise InputError(f"{hf_dir} has no config.json; point at a Hugging Face T5 model directory")
    config, params = read_hf(hf_dir)
    model = T5.from_params(config, params)
    tokenizer = hf_dir if tokenizer_files(hf_dir) else None
    if tokenizer is None:
        log.warning("%s has no tokenizer files; the model directory will have none", hf_dir)
    return save_model(model, config, out_dir, tokenizer_dir=tokenizer)


def generation_config(cfg: T5Config) -> dict:
    return {
        "decoder_start_token_id": cfg.decoder_start_token_id,
        "eos_token_id": cfg.eos_token_id,
        "pad_token_id": cfg.pad_token_id,
    }


def save_hf(model: T5, out_dir: str | Path, tokenizer_dir: str | Path | None = None) -> Path:
    """Write `model` as an HF directory loadable by `T5ForConditionalGeneration.from_pretrained`."""
    from safetensors.numpy import save_file

    cfg = model.config
    state = params_to_hf(jax.device_get(model.params()), cfg)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir, "config.json") as tmp:
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "generation_config.json").write_text(json.dumps(generation_config(cfg), indent=2) + "\n")
        if tokenizer_dir is not None:
            copy_tokenizer(Path(tokenizer_dir), tmp)
        (tmp / "config.json").write_text(json.dumps(cfg.to_hf_config(), indent=2) + "\n")
    log.info(
        "exported %s (%d tensors) to %s", "tied v1.0" if cfg.tie_word_embeddings else "untied", len(state), out_dir
    )
    return out_dir


def export_hf(model_ref: str | Path, out_dir: str | Path) -> Path:
    """Export a model reference (our model directory or an HF directory) as an HF directory."""
    _, model, tokenizer = load_model(model_ref)
    if tokenizer is None:
        log.warning("%s has no tokenizer; the export will have none (AutoTokenizer will not load it)", model_ref)
    return save_hf(model, out_dir, tokenizer)
