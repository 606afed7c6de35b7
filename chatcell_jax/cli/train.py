"""`chatcell train`: train or fine-tune a T5 on prepared instructions, on any number of devices/hosts."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a T5 on prepared instructions (sharded, checkpointed, resumable)",
        description="Train a model preset from scratch or fine-tune a model / HF directory. Config keys come from "
        "--config YAML, then --set key=value overrides (see configs/train/ and docs/training.md). "
        "Multi-host: run the same command on every host with coordinator_address set (or 'auto').",
    )
    p.add_argument("--config", type=Path, help="YAML run config (see configs/train/)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key (repeatable), e.g. --set batch_size=32 --set mesh=[2,2,1]",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in `out` from its latest checkpoint (exactly: same data order and "
        "dropout); starts fresh when it has none yet",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from chatcell_jax.train import train
    from chatcell_jax.train.config import load_config

    if not args.verbose:  # Orbax logs every save step by step through absl
        logging.getLogger("absl").setLevel(logging.WARNING)
    config = load_config(args.config, args.overrides)
    run_dir = train(config, resume=args.resume, progress=not args.no_progress)
    import jax

    if jax.process_index() == 0:
        print(f"wrote {run_dir}: {', '.join(_outputs(run_dir))}")
    return 0


def _outputs(run_dir) -> list[str]:
    """What the run directory holds, as the user will find it."""
    model = run_dir / "model"
    held = [name for name in ("tokenizer", "manifest.json") if (model / name).exists()]
    names = [f"model/ (with {' and '.join(held)})" if held else "model/ (without tokenizer or manifest)"]
    names += [
        n
        for n in ("checkpoints/", "metrics.jsonl", "tensorboard/", "config.json", "loss_curve.png")
        if (run_dir / n.rstrip("/")).exists()
    ]
    return names
