"""The training run config: one typed, flat dataclass loaded from YAML plus `--set key=value`.

Flat on purpose (as MaxText's base.yml): every key is overridable as `--set key=value` without
dotted paths, and the groups below are only comments. Unknown keys and values of the wrong type or
range are InputErrors naming the key, so a typo never silently falls back to a default. The
resolved config is written to the run directory as `config.json`; `--resume` reads it back.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from chatcell_jax.errors import InputError

CONFIG_FILE = "config.json"


@dataclass
class TrainConfig:
    # --- inputs and outputs ---
    data: str = ""  # prepared data dir (train/valid.jsonl) or ChatCell-Instructions dir (train/valid.json)
    tokenizer: str = ""  # tokenizer directory (`chatcell tokenizer`)
    out: str = "runs/demo"  # run directory: config, metrics, checkpoints, final model/
    overwrite: bool = False  # replace an existing run directory (otherwise an error; see --resume)
    # --- model ---
    model: str = "tiny"  # preset name / preset YAML (from scratch), or a model / HF directory (fine-tune)
    vocab_init: str = "mean"  # rows for tokens new to a pretrained model: mean | normal
    dtype: str = "float32"  # compute dtype (bfloat16 on accelerators); params and optimizer stay float32
    dropout_rate: float = 0.1
    remat: str = "none"  # none | minimal | full (activation recomputation, trades compute for memory)
    scan_layers: bool = True  # lax.scan over layers (fast compile) or unrolled
    # --- data ---
    max_source_length: int = 512  # longer sources are truncated (EOS kept) and counted
    max_target_length: int = 128
    padding: str = "bucket"  # bucket: pad each batch to its longest row rounded up | max: always the maxima
    #                          | pack: several examples per row (segment ids), same loss, fewer rows
    bucket_multiple: int = 64  # bucket granularity (fewer buckets = fewer compilations)
    shuffle: bool = True  # reshuffle the training set every epoch (seeded)
    data_threads: int = 2  # grain read threads per process
    # --- batch and steps ---
    steps: int = 300  # optimizer steps
    batch_size: int = 16  # global batch (all processes), examples per optimizer step
    grad_accum_steps: int = 1  # micro-batches per step; batch_size must divide by it x data parallelism
    seed: int = 0  # parameters, dropout and data order
    # --- optimizer and schedule ---
    optimizer: str = "adamw"  # adamw | adafactor
    learning_rate: float = 1e-3  # peak learning rate
    warmup_steps: int = 30  # linear warmup from 0
    decay: str = "cosine"  # cosine | linear | constant (after warmup)
    end_learning_rate_ratio: float = 0.1  # final lr = ratio x peak (cosine, linear)
    weight_decay: float = 0.01  # decoupled; never applied to norm scales
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    grad_clip: float = 1.0  # global-norm clip; 0 disables
    # --- loss and task mix (see chatcell_jax/train/loss.py) ---
    loss_normalization: str = "tokens"  # tokens (HF's token mean) | examples (each answer counts once) | tasks
    task_weights: dict[str, float] = field(default_factory=dict)  # `tasks` mode: {task: weight}, default 1 each
    task_sampling: str | dict[str, float] = "proportional"  # proportional | uniform | {task: rate}
    decoder_input_dropout: float = 0.0  # teacher-forcing inputs replaced by <unk> at this rate (word dropout)
    label_smoothing: float = 0.0
    z_loss: float = 0.0  # t5x's log(Z)^2 penalty (1e-4 there); keeps logits near zero in bf16
    # --- parallelism ---
    mesh: list[int] = field(default_factory=lambda: [-1, 1, 1])  # (data, fsdp, model) sizes; one -1 fills
    coordinator_address: str = ""  # host:port of process 0 for multi-process runs; "" = auto / single
    num_processes: int = 0  # with coordinator_address (0 = let jax.distributed detect)
    process_id: int = -1  # with coordinator_address (-1 = let jax.distributed detect)
    # --- evaluation ---
    eval_every: int = 100  # validation loss every N steps (and at step 0 and the end); 0 disables
    eval_batches: int = 8  # validation batches per evaluation; 0 = the whole split
    eval_generate: int = 0  # validation prompts per task decoded greedily at each evaluation (0: loss only)
    # --- checkpoints ---
    checkpoint_every: int = 0  # Orbax checkpoint every N steps (0: only at the end)
    keep_checkpoints: int = 2  # the latest K are kept ...
    keep_best: bool = True  # ... plus the one with the lowest validation loss
    async_checkpoint: bool = True  # write checkpoints in the background
    # --- logging ---
    log_every: int = 10  # train loss to metrics.jsonl / TensorBoard / progress bar every N steps
    tensorboard: bool = True  # event files under RUN/tensorboard
    peak_tflops: float = 0.0  # per-device peak for the MFU estimate; 0 = from the device kind (if known)

    def validate(self) -> None:
        """InputError naming the first bad key."""
        for name in ("data", "tokenizer", "out"):
            if not getattr(self, name):
                raise InputError(f"config key {name!r} is required (e.g. --set {name}=PATH)")
        positive = (
            "steps",
            "batch_size",
            "grad_accum_steps",
            "max_source_length",
            "max_target_length",
            "bucket_multiple",
            "data_threads",
            "keep_checkpoints",
            "log_every",
        )
        non_negative = (
            "warmup_steps",
            "eval_every",
            "eval_batches",
            "eval_generate",
            "checkpoint_every",
            "seed",
            "grad_clip",
            "weight_decay",
            "z_loss",
            "peak_tflops",
            "learning_rate",
            "num_processes",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise InputError(f"config key {name!r} must be at least 1, got {getattr(self, name)!r}")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise InputError(f"config key {name!r} must not be negative, got {getattr(self, name)!r}")
        choices = {
            "vocab_init": ("mean", "normal"),
            "dtype": ("float32", "bfloat16"),
            "remat": ("none", "minimal", "full"),
            "padding": ("bucket", "max", "pack"),
            "optimizer": ("adamw", "adafactor"),
            "decay": ("cosine", "linear", "constant"),
            "loss_normalization": ("tokens", "examples", "tasks"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise InputError(f"config key {name!r} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        for name in ("dropout_rate", "label_smoothing", "decoder_input_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise InputError(f"config key {name!r} must be in [0, 1), got {getattr(self, name)!r}")
        if not 0.0 <= self.end_learning_rate_ratio <= 1.0:
            raise InputError(
                f"config key 'end_learning_rate_ratio' must be in [0, 1], got {self.end_learning_rate_ratio!r}"
            )
        if len(self.mesh) != 3 or self.mesh.count(-1) > 1 or any(s == 0 or s < -1 for s in self.mesh):
            raise InputError(
                f"config key 'mesh' must be three sizes (data, fsdp, model), positive or one -1, got {self.mesh!r}"
            )
        self._validate_tasks()
        if self.batch_size % self.grad_accum_steps:
            raise InputError(
                f"batch_size {self.batch_size} is not divisible by grad_accum_steps {self.grad_accum_steps}"
            )

    def _validate_tasks(self) -> None:
        from chatcell_jax.singlecell.tasks import NAMES as TASKS

        if isinstance(self.task_sampling, str) and self.task_sampling not in ("proportional", "uniform"):
            raise InputError(
                "config key 'task_sampling' must be proportional, uniform or a mapping {task: rate}, "
                f"got {self.task_sampling!r}"
            )
        for name in ("task_weights", "task_sampling"):
            value = getattr(self, name)
            if not isinstance(value, dict):
                continue
            unknown = sorted(set(value) - set(TASKS))
            if unknown:
                raise InputError(f"config key {name!r} names unknown task(s) {unknown}; the tasks are {list(TASKS)}")
            if any(v < 0 for v in value.values()):
                raise InputError(f"config key {name!r} must not hold negative values, got {value!r}")

    def task_weight_vector(self) -> tuple[float, ...]:
        """`task_weights` as one weight per task slot (`chatcell_jax.train.data.TASK_NAMES`), 1 by default."""
        from chatcell_jax.train.data import TASK_NAMES

        return tuple(float(self.task_weights.get(name, 1.0)) for name in TASK_NAMES)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _kinds() -> dict[str, Any]:
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in fields(TrainConfig)}


def _coerce(name: str, kind: Any, value: Any) -> Any:
    """`value` as `kind`; strings from --set are parsed as YAML scalars/lists first."""
    if isinstance(value, str) and kind is not str:
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            pass
    if kind is float and isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind in (dict[str, float], str | dict[str, float]):
        return _coerce_task_map(name, kind, value)
    if kind == list[int]:
        if isinstance(value, str):  # "2,2,2"
            value = [yaml.safe_load(v) for v in value.split(",")]
        if isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return list(value)
        raise InputError(f"config key {name!r} needs a list of integers such as [2, 2, 2], got {value!r}")
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InputError(f"config key {name!r} needs a {kind.__name__}, got {value!r}")
    return value


def _coerce_task_map(name: str, kind: Any, value: Any) -> Any:
    """{task: number} (from YAML or `--set key={annotation: 2}`), or for task_sampling a mode name."""
    if isinstance(value, str) and kind is not dict[str, float]:
        return value
    if (
        isinstance(value, dict)
        and all(isinstance(k, str) for k in value)
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values())
    ):
        return {k: float(v) for k, v in value.items()}
    raise InputError(f"config key {name!r} needs a mapping {{task: number}} such as {{annotation: 2.0}}, got {value!r}")


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise InputError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise InputError(f"config file {path} must hold a mapping of config keys")
    return data


def parse_overrides(overrides: list[str]) -> dict[str, str]:
    out = {}
    for item in overrides:
        if "=" not in item:
            raise InputError(f"--set takes key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = value
    return out


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, base: dict[str, Any] | None = None
) -> TrainConfig:
    """A validated config from `base` (e.g. a saved config.json), then the YAML file, then `--set`s."""
    data = dict(base or {})
    if path is not None:
        data.update(_read_yaml(Path(path)))
    data.update(parse_overrides(overrides or []))
    kinds = _kinds()
    unknown = sorted(set(data) - set(kinds))
    if unknown:
        raise InputError(f"unknown config key(s) {unknown}; known keys: {', '.join(sorted(kinds))}")
    config = TrainConfig(**{k: _coerce(k, kinds[k], v) for k, v in data.items()})
    config.validate()
    return config


def save_config(config: TrainConfig, run_dir: Path) -> None:
    (Path(run_dir) / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")


def read_saved_config(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise InputError(
            f"{run_dir} has no {CONFIG_FILE}: it is not a training run directory, so there is "
            "nothing to resume (drop --resume to start a new run)"
        )
    return json.loads(path.read_text())
