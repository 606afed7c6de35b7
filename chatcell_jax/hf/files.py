"""Files: reading HF weights safely, atomic output directories, tokenizer files.

Weights are read from safetensors (single or sharded with an index). A `pytorch_model.bin` is read
only through `torch.load(weights_only=True)`, which refuses arbitrary pickled objects; nothing else
is ever unpickled.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np

from chatcell_jax.atomic import atomic_dir as _atomic_dir
from chatcell_jax.errors import InputError

log = logging.getLogger(__name__)

# Files a tokenizer directory may hold (HF's slow and fast T5 tokenizers).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "chat_template.jinja",
    "chat_template.json",
)


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path} does not exist") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object")
    return data


def _load_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    # The "flax" framework understands bfloat16 (numpy alone does not); arrays come back as numpy.
    with safe_open(str(path), framework="flax") as f:
        return {name: np.asarray(f.get_tensor(name)) for name in f.keys()}


def _load_torch_bin(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise InputError(
            f"{path} is a PyTorch pickle; reading it needs torch (pip install 'chatcell-jax[hf]'), "
            "or convert the checkpoint to model.safetensors"
        ) from None
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    out = {}
    for name, tensor in state.items():
        tensor = tensor.detach()
        out[name] = (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()
    return out


def _sharded(index_path: Path, loader) -> dict[str, np.ndarray]:
    weight_map = read_json(index_path).get("weight_map", {})
    out: dict[str, np.ndarray] = {}
    for shard in sorted(set(weight_map.values())):
        out.update(loader(index_path.parent / shard))
    return out


def load_hf_weights(hf_dir: Path) -> dict[str, np.ndarray]:
    """State dict of an HF model directory, preferring safetensors."""
    candidates = [
        ("model.safetensors", _load_safetensors),
        ("model.safetensors.index.json", lambda p: _sharded(p, _load_safetensors)),
        ("pytorch_model.bin", _load_torch_bin),
        ("pytorch_model.bin.index.json", lambda p: _sharded(p, _load_torch_bin)),
    ]
    for name, loader in candidates:
        if (hf_dir / name).is_file():
            log.info("reading %s", hf_dir / name)
            return loader(hf_dir / name)
    raise InputError(f"{hf_dir} has no weights: expected model.safetensors (or a sharded index, or pytorch_model.bin)")


def tokenizer_files(directory: Path) -> list[Path]:
    return [directory / name for name in TOKENIZER_FILES if (directory / name).is_file()]


def copy_tokenizer(src: Path, dst: Path) -> None:
    files = tokenizer_files(src)
    if not files:
        raise InputError(f"{src} holds no tokenizer files (expected e.g. tokenizer.json or spiece.model)")
    dst.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy2(f, dst / f.name)


def atomic_dir(target: Path, marker: str):
    """Our model/HF output directories: replaced only when they are previous outputs (`marker`)."""
    return _atomic_dir(target, overwrite=True, marker=marker)
