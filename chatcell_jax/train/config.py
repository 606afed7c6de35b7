"""The training run config: one typed, flat pydantic model loaded from YAML plus `--set key=value`.

Flat on purpose (as MaxText's base.yml): every key is overridable as `--set key=value` without
dotted paths, and the groups below are only comments. pydantic checks types and ranges; unknown
keys and bad values are InputErrors naming the key, so a typo never silently falls back to a
default. `--set` values are read as YAML scalars first (`steps=9`, `shuffle=false`,
`mesh=[2,2,2]` or `mesh=2,2,2`, `task_sampling={annotation: 2}`), except for string keys, which
take the text as it is. The resolved config is written to the run directory as `config.json`;
`--resume` reads it back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from chatcell_jax.errors import InputError
from chatcell_jax.seed import MAX_SEED

CONFIG_FILE = "config.json"
AtLeastOne = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]  # see chatcell_jax/seed.py
NonNegative = Annotated[float, Field(ge=0.0)]
Rate = Annotated[float, Field(ge=0.0, lt=1.0)]  # a probability below one (dropout, smoothing)
TaskMap = dict[str, Annotated[float, Field(ge=0.0)]]


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    # --- inputs and outputs ---
    data: str = ""  # prepared data dir (train/valid.jsonl) or ChatCell-Instructions dir (train/valid.json)
    tokenizer: str = ""  # tokenizer directory (`chatcell tokenizer`)
    out: str = "runs/demo"  # run directory: config, metrics, checkpoints, final model/
    overwrite: bool = False  # replace an existing run directory (otherwise an error; see --resume)
    # --- model ---
    model: str = "tiny"  # preset name / preset YAML (from scratch), or a model / HF directory (fine-tune)
    vocab_init: Literal["mean", "normal"] = "mean"  # rows for tokens new to a pretrained model
    # gene rows of the embedding table: as the model starts them (model), or from a truncated SVD of
    # the training cells' gene matrix (svd; chatcell_jax/train/gene_init.py)
    gene_init: Literal["model", "svd"] = "model"
    dtype: Literal["float32", "bfloat16"] = "float32"  # compute; params and optimizer stay float32
    dropout_rate: Rate = 0.1
    remat: Literal["none", "minimal", "full"] = "none"  # activation recomputation
    scan_layers: bool = True  # lax.scan over layers (fast compile) or unrolled
    # --- data ---
    max_source_length: AtLeastOne = 512  # longer sources are truncated (EOS kept) and counted
    max_target_length: AtLeastOne = 128
    # padding: bucket pads each batch to its longest row rounded up, max always to the maxima, pack
    # puts several examples in a row (segment ids): same loss, fewer rows
    padding: Literal["bucket", "max", "pack"] = "bucket"
    bucket_multiple: AtLeastOne = 64  # bucket granularity (fewer buckets = fewer compilations)
    shuffle: bool = True  # reshuffle the training set every epoch (seeded)
    data_threads: AtLeastOne = 2  # grain read threads per process
    # --- batch and steps ---
    steps: AtLeastOne = 300  # optimizer steps
    batch_size: AtLeastOne = 16  # global batch (all processes), examples per optimizer step
    grad_accum_steps: AtLeastOne = 1  # micro-batches per step; batch_size must divide by it x data parallelism
    seed: Seed = 0  # parameters, dropout and data order
    # --- optimizer and schedule ---
    optimizer: Literal["adamw", "adafactor"] = "adamw"
    learning_rate: NonNegative = 1e-3  # peak learning rate
    warmup_steps: NonNegativeInt = 30  # linear warmup from 0
    decay: Literal["cosine", "linear", "constant"] = "cosine"  # after warmup
    end_learning_rate_ratio: Annotated[float, Field(ge=0.0, le=1.0)] = 0.1  # final lr = ratio x peak (cosine, linear)
    weight_decay: NonNegative = 0.01  # decoupled; never applied to norm scales
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    grad_clip: NonNegative = 1.0  # global-norm clip; 0 disables
    # --- loss and task mix (see chatcell_jax/train/loss.py) ---
    loss_normalization: Literal["tokens", "examples", "tasks"] = "tokens"  # tokens: HF's mean; examples: per answer
    task_weights: TaskMap = Field(default_factory=dict)  # `tasks` mode: {task: weight}, default 1 each
    task_sampling: Literal["proportional", "uniform"] | TaskMap = "proportional"  # or {task: rate}
    decoder_input_dropout: Rate = 0.0  # teacher-forcing inputs replaced by <unk> at this rate (word dropout)
    label_smoothing: Rate = 0.0
    z_loss: NonNegative = 0.0  # t5x's log(Z)^2 penalty (1e-4 there); keeps logits near zero in bf16
    # --- parallelism ---
    mesh: list[int] = Field(default_factory=lambda: [-1, 1, 1])  # (data, fsdp, model) sizes; one -1 fills
    coordinator_address: str = ""  # host:port of process 0 for multi-process runs; "" = auto / single
    num_processes: NonNegativeInt = 0  # with coordinator_address (0 = let jax.distributed detect)
    process_id: int = -1  # with coordinator_address (-1 = let jax.distributed detect)
    # --- evaluation ---
    eval_every: NonNegativeInt = 100  # validation loss every N steps (and at step 0 and the end); 0 disables
    eval_batches: NonNegativeInt = 8  # validation batches per evaluation; 0 = the whole split
    eval_generate: NonNegativeInt = 0  # validation prompts per task decoded greedily at each evaluation (0: loss only)
    # --- checkpoints ---
    checkpoint_every: NonNegativeInt = 0  # Orbax checkpoint every N steps (0: only at the end)
    keep_checkpoints: AtLeastOne = 2  # the latest K are kept ...
    keep_best: bool = True  # ... plus the one with the lowest validation loss
    async_checkpoint: bool = True  # write checkpoints in the background
    # --- logging ---
    log_every: AtLeastOne = 10  # train loss to metrics.jsonl / TensorBoard / progress bar every N steps
    tensorboard: bool = True  # event files under RUN/tensorboard
    peak_tflops: NonNegative = 0.0  # per-device peak for the MFU estimate; 0 = from the device kind (if known)

    @field_validator("mesh", mode="before")
    @classmethod
    def _mesh_from_text(cls, value: Any) -> Any:
        if isinstance(value, str):  # "2,2,2"
            return [yaml.safe_load(v) for v in value.split(",")]
        return value

    @field_validator("mesh")
    @classmethod
    def _mesh_shape(cls, mesh: list[int]) -> list[int]:
        if len(mesh) != 3 or mesh.count(-1) > 1 or any(s == 0 or s < -1 for s in mesh):
            raise ValueError(f"must be three sizes (data, fsdp, model), positive or one -1, got {mesh!r}")
        return mesh

    @field_validator("task_weights", "task_sampling")
    @classmethod
    def _known_tasks(cls, value: Any) -> Any:
        from chatcell_jax.singlecell.tasks import NAMES

        unknown = sorted(set(value) - set(NAMES)) if isinstance(value, dict) else []
        if unknown:
            raise ValueError(f"names unknown task(s) {unknown}; the tasks are {list(NAMES)}")
        return value

    @model_validator(mode="after")
    def _batch_divides(self) -> TrainConfig:
        if self.batch_size % self.grad_accum_steps:
            raise ValueError(
                f"batch_size {self.batch_size} is not divisible by grad_accum_steps {self.grad_accum_steps}"
            )
        return self

    def task_weight_vector(self) -> tuple[float, ...]:
        """`task_weights` as one weight per task slot (`chatcell_jax.train.data.TASK_NAMES`), 1 by default."""
        from chatcell_jax.train.data import TASK_NAMES

        return tuple(float(self.task_weights.get(name, 1.0)) for name in TASK_NAMES)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


def _first_error(err: ValidationError) -> InputError:
    """The first problem pydantic found, as a one-line error naming the key."""
    extra = [str(e["loc"][0]) for e in err.errors() if e["type"] == "extra_forbidden"]
    if extra:
        return InputError(f"unknown config key(s) {extra}; known keys: {', '.join(sorted(TrainConfig.model_fields))}")
    first = err.errors()[0]
    message = first["msg"].removeprefix("Value error, ")
    if not first["loc"]:
        return InputError(message)
    key = str(first["loc"][0])
    return InputError(f"config key {key!r}: {message[0].lower() + message[1:]}, got {first['input']!r}")


def _from_text(key: str, text: str) -> Any:
    """A `--set` value: YAML for typed keys ("9", "false", "[2,2,2]"), the text itself for strings."""
    field = TrainConfig.model_fields.get(key)
    if field is None or field.annotation is str:
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


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
    data.update({key: _from_text(key, value) for key, value in parse_overrides(overrides or []).items()})
    try:
        config = TrainConfig(**data)
    except ValidationError as err:
        raise _first_error(err) from None
    for name in ("data", "tokenizer", "out"):
        if not getattr(config, name):
            raise InputError(f"config key {name!r} is required (e.g. --set {name}=PATH)")
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
