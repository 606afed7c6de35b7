"""Run metrics: metrics.jsonl, TensorBoard events, the MFU estimate and the loss-curve PNG.

Only process 0 writes. `metrics.jsonl` has one JSON object per logged step; on resume, lines of
steps after the restored checkpoint are dropped first, so the file reads as one continuous run.
MFU = model FLOPs per second / (devices x peak FLOP/s per device), with the FLOPs of a T5 train
step counted from its matmuls (forward x 3 for the backward pass) at the batch's padded shape.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import jax

from chatcell_jax.model.config import T5Config

log = logging.getLogger(__name__)

# Dense bf16 peak FLOP/s per device (vendor numbers), matched against jax's device_kind.
PEAK_BF16 = {
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
    "L4": 121e12,
    "A10": 125e12,
    "V100": 125e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v6": 918e12,
}


def peak_flops(config_tflops: float, dtype: str) -> float | None:
    """Per-device peak FLOP/s: the config's, or the bf16 table's for bf16 compute; None if unknown."""
    if config_tflops > 0:
        return config_tflops * 1e12
    if dtype != "bfloat16":
        return None
    kind = jax.devices()[0].device_kind
    return next((v for k, v in PEAK_BF16.items() if k.lower() in kind.lower()), None)


def train_flops(cfg: T5Config, batch: int, source_len: int, target_len: int) -> float:
    """FLOPs of one train step (forward + backward = 3 x forward; 2 FLOPs per multiply-add)."""
    d, inner, ff, v = cfg.d_model, cfg.inner_dim, cfg.d_ff, cfg.padded_vocab_size
    mlp = (3 if cfg.gated else 2) * d * ff
    s, t = source_len, target_len
    encoder = cfg.num_layers * (s * (4 * d * inner + mlp) + 2 * s * s * inner)
    decoder = cfg.num_decoder_layers * (
        t * (4 * d * inner + mlp) + s * 2 * d * inner + t * 2 * d * inner + 2 * t * t * inner + 2 * t * s * inner
    )
    head = t * d * v
    return 3 * 2 * batch * (encoder + decoder + head)


class MetricsLog:
    """metrics.jsonl + TensorBoard scalars (process 0 only)."""

    def __init__(self, run_dir: Path, tensorboard: bool, resume_step: int | None = None):
        self.enabled = jax.process_index() == 0
        self.path = Path(run_dir) / "metrics.jsonl"
        self.writer = None
        if not self.enabled:
            return
        if resume_step is not None and self.path.is_file():
            keep = [line for line in self.path.read_text().splitlines() if json.loads(line)["step"] <= resume_step]
            self.path.write_text("".join(line + "\n" for line in keep))
        elif resume_step is None:
            self.path.write_text("")
        if tensorboard:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=resume_step)

    def write(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        record = {"step": step, **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in values.items()}}
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for name, value in values.items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def plot_losses(run_dir: Path) -> Path | None:
    """loss_curve.png from metrics.jsonl: left, the train loss per logged step and the validation loss
    per evaluation; right, one curve per task (train thin, validation with markers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    series = lambda key: [(r["step"], r[key]) for r in rows if key in r]
    train, valid = series("loss"), series("valid_loss")
    if not train and not valid:
        return None
    tasks = sorted(
        {k[len("valid_loss_") :] for r in rows for k in r if k.startswith("valid_loss_")}
        | {k[len("loss_") :] for r in rows for k in r if k.startswith("loss_")}
    )
    fig, axes = plt.subplots(1, 2 if tasks else 1, figsize=(12 if tasks else 6, 4), squeeze=False)
    ax = axes[0, 0]
    if train:
        ax.plot(*zip(*train), label="train")
    if valid:
        ax.plot(*zip(*valid), marker="o", label="validation")
    ax.set(xlabel="step", ylabel="cross entropy (token mean)", title="all tasks")
    ax.legend()
    if tasks:
        ax = axes[0, 1]
        for index, task in enumerate(tasks):
            color = f"C{index}"
            has_valid = bool(series(f"valid_loss_{task}"))
            if series(f"loss_{task}"):
                ax.plot(
                    *zip(*series(f"loss_{task}")),
                    color=color,
                    alpha=0.35,
                    linewidth=1,
                    label=None if has_valid else task,
                )
            if has_valid:
                ax.plot(*zip(*series(f"valid_loss_{task}")), color=color, marker="o", label=task)
        ax.set(xlabel="step", ylabel="cross entropy (token mean)", title="per task (thin: train, dots: validation)")
        ax.legend(fontsize="small")
    fig.tight_layout()
    out = Path(run_dir) / "loss_curve.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
