"""Our model directory, and loading a model from any model reference.

Format (version 1):

    MODEL_DIR/
      model_config.json    {"format": "chatcell-jax-model", "version": 1, "config": {T5Config fields}}
      params.safetensors   one tensor per weight, named by its path ("encoder/layers/q"), with the
                           padded vocabulary and the stacked [layers, ...] layout
      tokenizer/           optional: the HF tokenizer files the model was trained with

safetensors rather than an Orbax tree: one self-describing file, readable without JAX, bit-exact.
Training checkpoints (optimizer state, data position) are Orbax and live in the run directory:

    RUN/
      model/                     the trained model (a model directory), written at the end
      checkpoints/<step>/state   Orbax train state; `load_model(RUN/checkpoints/<step>)` reads its params
      step_model_config.json     the config of the model the checkpoints hold (model_config.json's format)
      tokenizer/                 the run's tokenizer, copied at the start

`load_model` accepts any of these references: a model directory, a run directory (its `model/`),
an Orbax step of a run, or a Hugging Face T5 directory.
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
STEP_CONFIG_FILE = "step_model_config.json"


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
        (tmp / CONFIG_FILE).write_text(_config_json(config))  # written last: it marks a complete directory
    log.info("saved model (%s) to %s", _describe(config), out_dir)
    return out_dir


def _config_json(config: T5Config) -> str:
    return json.dumps({"format": FORMAT, "version": 1, "config": config.to_dict()}, indent=2) + "\n"


def write_step_files(run_dir: Path, config: T5Config, tokenizer_dir: str | Path) -> None:
    """What a run's Orbax steps need to be loaded as models: the model config and the tokenizer."""
    (run_dir / STEP_CONFIG_FILE).write_text(_config_json(config))
    if Path(tokenizer_dir).is_dir():
        copy_tokenizer(Path(tokenizer_dir), run_dir / TOKENIZER_DIR)


def _describe(cfg: T5Config) -> str:
    return (
        f"d_model={cfg.d_model}, layers={cfg.num_layers}+{cfg.num_decoder_layers}, vocab={cfg.vocab_size}, "
        f"{'tied v1.0' if cfg.tie_word_embeddings else 'untied'} {cfg.feed_forward_proj}"
    )


def _read_config(path: Path) -> T5Config:
    meta = read_json(path)
    if meta.get("format") != FORMAT or meta.get("version") != 1:
        raise InputError(
            f"{path} is not a chatcell-jax model config "
            f"(format {meta.get('format')!r}, version {meta.get('version')!r})"
        )
    return T5Config.from_dict(meta["config"])


def _load_ours(model_dir: Path) -> tuple[T5Config, Params]:
    from safetensors.numpy import load_file

    config = _read_config(model_dir / CONFIG_FILE)
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


def is_step_dir(path: Path) -> bool:
    """An Orbax step of a training run: RUN/checkpoints/<step>/state."""
    return path.parent.name == "checkpoints" and path.name.isdigit() and (path / "state").is_dir()


def resolve_model_ref(model_ref: str | Path) -> Path:
    """The directory a model reference names: a run directory means its `model/`."""
    path = Path(model_ref)
    if not path.exists():
        raise InputError(
            f"model {path} does not exist; train one with `chatcell train` or import one with `chatcell import-hf`"
        )
    if is_model_dir(path / "model"):
        return path / "model"
    if (path / STEP_CONFIG_FILE).is_file() and not is_model_dir(path):
        raise InputError(
            f"{path} is a training run without a final model yet; name one of its steps "
            f"({path / 'checkpoints'}/<step>) or let the training finish"
        )
    return path


def _load_step(step_dir: Path) -> tuple[T5Config, Params, Path | None]:
    """Parameters of an Orbax step (only `params` is read), with the run's model config and tokenizer."""
    import orbax.checkpoint as ocp

    step_dir = step_dir.absolute()  # Orbax misreads a relative path (no tree metadata, or an error)
    run_dir = step_dir.parent.parent
    if not (run_dir / STEP_CONFIG_FILE).is_file():
        raise InputError(
            f"{step_dir} is an Orbax step, but {run_dir / STEP_CONFIG_FILE} is missing (a run from an older "
            "version); load RUN/model instead"
        )
    config = _read_config(run_dir / STEP_CONFIG_FILE)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    saved = ocp.StandardCheckpointer().metadata(step_dir / "state")
    saved = getattr(saved, "item_metadata", saved)["params"]
    target = {"params": jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), saved)}
    restore = jax.tree.map(lambda _: ocp.ArrayRestoreArgs(sharding=device), target)
    args = ocp.args.PyTreeRestore(item=target, restore_args=restore, partial_restore=True)
    params = ocp.PyTreeCheckpointer().restore(step_dir / "state", args=args)["params"]
    tokenizer = run_dir / TOKENIZER_DIR
    return config, jax.device_get(params), tokenizer if tokenizer.is_dir() else None


def load_model(
    model_ref: str | Path, mesh: jax.sharding.Mesh | None = None, **overrides
) -> tuple[T5Config, T5, Path | None]:
    """(config, model, tokenizer_dir or None) from any model reference (see the module docstring).

    With `mesh`, parameters are placed sharded by the logical axis rules. `overrides` replace
    config fields that do not change the weights (dtype, scan_layers, remat, dropout_rate).
    """
    path = resolve_model_ref(model_ref)
    if is_model_dir(path):
        config, params = _load_ours(path)
        config = config.replace(**overrides)
        tokenizer = path / TOKENIZER_DIR if (path / TOKENIZER_DIR).is_dir() else None
    elif is_step_dir(path):
        config, params, tokenizer = _load_step(path)
        config = config.replace(**overrides)
    elif (path / "config.json").is_file():
        config, params = read_hf(path, **overrides)
        tokenizer = path if tokenizer_files(path) else None
    else:
        raise InputError(
            f"{path} is not a model: expected our model directory ({CONFIG_FILE}), a training run or one of "
            "its checkpoints/<step>, or a Hugging Face directory (config.json + model.safetensors)"
        )
    if mesh is not None:
        from chatcell_jax.model.sharding import shard_params

        params = shard_params(params, config, mesh)
    return config, T5.from_params(config, params), tokenizer
