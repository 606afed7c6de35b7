"""`T5Config`: the model's shape and numerics, with Hugging Face's field names.

One dataclass covers T5 v1.0 (ReLU feed-forward, tied embeddings with the d_model**-0.5 rescale
before the head) and v1.1 (gated-GELU, untied head). The HF fields keep HF's names and defaults so
`from_hf_config` / `to_hf_config` are plain copies; our own fields (vocabulary padding, compute
dtype, scan, remat) never reach an HF `config.json`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from chatcell_jax.errors import InputError

# Feed-forward variants HF's T5 accepts: (activation, gated). HF maps "gated-gelu" to the tanh
# approximation ("gelu_new") and plain "gelu" to the exact erf form.
FEED_FORWARD = {
    "relu": ("relu", False),
    "gelu": ("gelu_exact", False),
    "gated-relu": ("relu", True),
    "gated-gelu": ("gelu_tanh", True),
}
DTYPES = ("float32", "bfloat16", "float16")
REMAT = ("none", "minimal", "full")
PRESET_DIR = Path(__file__).resolve().parent / "presets"  # package data: an installed wheel has them

# The fields shared with transformers' T5Config, in its order.
HF_FIELDS = (
    "vocab_size",
    "d_model",
    "d_kv",
    "d_ff",
    "num_layers",
    "num_decoder_layers",
    "num_heads",
    "relative_attention_num_buckets",
    "relative_attention_max_distance",
    "dropout_rate",
    "layer_norm_epsilon",
    "feed_forward_proj",
    "tie_word_embeddings",
    "pad_token_id",
    "eos_token_id",
    "decoder_start_token_id",
)


@dataclass(frozen=True)
class T5Config:
    """Frozen (hashable, so it can sit in an NNX graph definition); change it with `replace`."""

    # --- Hugging Face fields (same names, same defaults as transformers' T5Config) ---
    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 2048
    num_layers: int = 6
    num_decoder_layers: int | None = None  # None: same as num_layers
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "relu"
    tie_word_embeddings: bool = True  # True: v1.0 head (shared table, rescaled); False: own lm_head
    pad_token_id: int = 0
    eos_token_id: int = 1
    decoder_start_token_id: int = 0
    # --- ours ---
    vocab_multiple: int = 128  # embedding rows padded to a multiple of this (and of the model axis)
    dtype: str = "float32"  # compute dtype of matmuls; norms, softmax and logits stay float32
    param_dtype: str = "float32"
    scan_layers: bool = True  # lax.scan over stacked layers (fast compile) or a Python loop
    remat: str = "none"  # "none" | "minimal" (save matmul outputs) | "full" (save nothing)

    def __post_init__(self) -> None:
        if self.num_decoder_layers is None:
            object.__setattr__(self, "num_decoder_layers", self.num_layers)
        self.validate()

    def validate(self) -> None:
        """Raise InputError naming the first bad field."""
        for name in (*HF_FIELDS[: HF_FIELDS.index("dropout_rate")], "vocab_multiple"):  # the sizes
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"model config: {name} must be a positive integer, got {value!r}")
        if self.feed_forward_proj not in FEED_FORWARD:
            raise InputError(
                f"model config: feed_forward_proj {self.feed_forward_proj!r} is not supported; "
                f"use one of {sorted(FEED_FORWARD)}"
            )
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in DTYPES:
                raise InputError(f"model config: {name} must be one of {DTYPES}, got {getattr(self, name)!r}")
        if self.remat not in REMAT:
            raise InputError(f"model config: remat must be one of {REMAT}, got {self.remat!r}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise InputError(f"model config: dropout_rate must be in [0, 1), got {self.dropout_rate!r}")

    # --- derived ---
    @property
    def padded_vocab_size(self) -> int:
        """Rows of the embedding table: vocab_size rounded up to `vocab_multiple`."""
        return padded_vocab_size(self.vocab_size, self.vocab_multiple)

    @property
    def activation(self) -> str:
        return FEED_FORWARD[self.feed_forward_proj][0]

    @property
    def gated(self) -> bool:
        return FEED_FORWARD[self.feed_forward_proj][1]

    @property
    def inner_dim(self) -> int:
        return self.num_heads * self.d_kv

    def replace(self, **changes: Any) -> T5Config:
        return dataclasses.replace(self, **changes)

    # --- (de)serialisation ---
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> T5Config:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"model config: unknown key {unknown[0]!r} (known keys: {', '.join(sorted(known))})")
        return cls(**data)

    @classmethod
    def from_hf_config(cls, hf: dict[str, Any]) -> T5Config:
        """Build from an HF `config.json` dict; anything that is not a T5 is an InputError."""
        model_type = hf.get("model_type")
        archs = hf.get("architectures") or []
        if model_type != "t5" and "T5ForConditionalGeneration" not in archs:
            raise InputError(
                f"config.json describes model_type={model_type!r} (architectures {archs}); only T5 "
                "(T5ForConditionalGeneration, v1.0 or v1.1) can be imported"
            )
        # Other keys (generation defaults, bookkeeping) do not change the network and are ignored.
        fields = {k: hf[k] for k in HF_FIELDS if hf.get(k) is not None}
        if "scale_decoder_outputs" in hf:  # transformers >= 5 stores the v1.0 head switch here
            fields["tie_word_embeddings"] = bool(hf["scale_decoder_outputs"])
        for key in ("eos_token_id", "pad_token_id", "decoder_start_token_id"):
            if isinstance(fields.get(key), list):
                fields[key] = fields[key][0]
        return cls(**fields)

    def to_hf_config(self) -> dict[str, Any]:
        """The `config.json` dict for `T5ForConditionalGeneration` (the real, unpadded vocabulary)."""
        out: dict[str, Any] = {"architectures": ["T5ForConditionalGeneration"], "model_type": "t5"}
        out.update({name: getattr(self, name) for name in HF_FIELDS})
        out["is_encoder_decoder"] = True
        out["scale_decoder_outputs"] = self.tie_word_embeddings
        out["initializer_factor"] = 1.0
        out["use_cache"] = True
        return out


def padded_vocab_size(vocab_size: int, vocab_multiple: int = 128, model_axis: int = 1) -> int:
    """Smallest multiple of lcm(vocab_multiple, model_axis) that holds `vocab_size` rows.

    JAX refuses uneven shardings, so a vocabulary sharded over the model axis must divide evenly.
    """
    step = math.lcm(vocab_multiple, model_axis)
    return -(-vocab_size // step) * step


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name_or_path: str | Path, **overrides: Any) -> T5Config:
    """A preset by name (`chatcell_jax/model/presets/<name>.yaml`) or a YAML file path; `overrides` win."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = PRESET_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise InputError(
                f"unknown model preset {str(name_or_path)!r}; presets: {', '.join(preset_names())} "
                "(or give a path to a .yaml file)"
            )
    elif not path.is_file():
        raise InputError(f"model config file {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return T5Config.from_dict({**data, **overrides})
