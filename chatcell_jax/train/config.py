"""The run config: one typed dataclass, loaded from YAML with `--set key=value` overrides.

Unknown keys and values of the wrong type are errors naming the key, so a typo never silently
falls back to a default. The resolved config is written to the run directory.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from chatcell_jax.errors import InputError


@dataclass
class TrainConfig:
    data: str = ""  # prepared data directory (train/valid.jsonl + manifest.json)
    tokenizer: str = ""  # tokenizer directory from `chatcell tokenizer`
    out: str = "runs/demo"  # run directory
    model: str = "tiny"  # a preset name / YAML, or a model directory / HF directory to fine-tune
    vocab_init: str = "mean"  # rows for tokens new to a pretrained model: mean | normal
    dtype: str = "float32"  # compute dtype (bfloat16 on accelerators); params stay float32
    steps: int = 300
    batch_size: int = 16
    learning_rate: float = 1e-3
    warmup_steps: int = 30
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    dropout_rate: float = 0.1
    max_source_length: int = 512
    max_target_length: int = 128
    eval_every: int = 100
    eval_batches: int = 8
    seed: int = 0
    overwrite: bool = False

    def validate(self) -> None:
        for name in ("data", "tokenizer"):
            if not getattr(self, name):
                raise InputError(f"config key {name!r} is required (e.g. --set {name}=PATH)")
        for name in ("steps", "batch_size", "max_source_length", "max_target_length", "eval_every"):
            if getattr(self, name) < 1:
                raise InputError(f"config key {name!r} must be at least 1, not {getattr(self, name)}")
        if self.vocab_init not in ("mean", "normal"):
            raise InputError(f"vocab_init must be 'mean' or 'normal', not {self.vocab_init!r}")
        if self.dtype not in ("float32", "bfloat16"):
            raise InputError(f"dtype must be 'float32' or 'bfloat16', not {self.dtype!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _coerce(name: str, kind: type, value):
    if isinstance(value, str) and kind is not str:
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            pass
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InputError(f"config key {name!r} needs a {kind.__name__}, got {value!r}")
    return value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    data = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"config file {path} does not exist")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise InputError(f"{path} must hold a mapping of config keys")
    for item in overrides or []:
        if "=" not in item:
            raise InputError(f"--set takes key=value, not {item!r}")
        key, value = item.split("=", 1)
        data[key.strip()] = value
    kinds = {f.name: type(f.default) for f in fields(TrainConfig)}
    unknown = sorted(set(data) - set(kinds))
    if unknown:
        raise InputError(f"unknown config key(s) {unknown}; known keys: {sorted(kinds)}")
    config = TrainConfig(**{k: _coerce(k, kinds[k], v) for k, v in data.items()})
    config.validate()
    return config


def save_config(config: TrainConfig, run_dir: Path) -> None:
    (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
