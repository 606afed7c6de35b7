"""`chatcell train`: fine-tune or train a T5 on prepared instructions."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train a T5 on prepared instructions",
                              description="Train from a model preset or fine-tune a model directory / HF directory. "
                                          "Config keys come from --config YAML and --set key=value overrides.")
    p.add_argument("--config", type=Path, help="YAML run config (see configs/train/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key (repeatable)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from chatcell_jax.train.config import load_config
    from chatcell_jax.train.loop import train

    config = load_config(args.config, args.overrides)
    run_dir = train(config, progress=not args.no_progress)
    print(f"wrote {run_dir}: model/ (with tokenizer and manifest), metrics.jsonl, config.json, loss_curve.png")
    return 0
