"""Shared pieces of the training tests: a small prepared dataset + tokenizer, subprocess runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Small shapes everywhere: compile time dominates on 2 CPU cores.
SMALL = [
    "max_source_length=96",
    "max_target_length=48",
    "bucket_multiple=48",
    "log_every=1",
    "tensorboard=false",
    "data_threads=1",
]


def prepare(root: Path, top_k: int = 30) -> tuple[Path, Path]:
    """(data_dir, tokenizer_dir) from the bundled PBMC cells, built once per directory."""
    from chatcell_jax.singlecell import prepare as ins
    from chatcell_jax.tokenizer import build_tokenizer

    data, tok = root / "data", root / "tok"
    if not (tok / "tokenizer.json").is_file():
        ins.prepare_dataset(data, cells_input=ins.demo_data_path(), options=ins.PrepareOptions(top_k=top_k))
        build_tokenizer(data, tok)
    return data, tok


def demo_config(prepared: tuple[Path, Path], out: Path, *overrides: str):
    """The demo's run config on `prepare`d data at the SMALL shapes, no evaluation, then `overrides`."""
    from chatcell_jax.train.config import load_config

    data, tok = prepared
    return load_config(
        "configs/train/demo.yaml",
        [f"data={data}", f"tokenizer={tok}", f"out={out}", "eval_every=0", *SMALL, *overrides],
    )


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in metrics(run_dir) if "loss" in r}


def cli_env(devices: int, cache_dir: Path) -> dict:
    """Environment for a `chatcell` subprocess with `devices` fake CPU devices and a shared
    compilation cache (several processes compile the same step)."""
    env = dict(os.environ)
    env.update(
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_PLATFORMS="cpu",
        JAX_COMPILATION_CACHE_DIR=str(cache_dir),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        PYTHONPATH=str(REPO),
    )
    return env


def cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "chatcell_jax.cli", *args]


def run_cli(args: list[str], env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cli(args), env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
