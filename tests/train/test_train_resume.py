"""A run killed with SIGKILL after a checkpoint and resumed ends bit-identical to an uninterrupted
run: parameters, optimizer position, dropout keys and data order all come back."""

import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.helpers.train import REPO, SMALL, cli, cli_env, losses, prepare, run_cli

pytestmark = pytest.mark.slow

STEPS = 24


def _args(data, tok, out, extra=()):
    return [
        "train",
        "--config",
        "configs/train/demo.yaml",
        "--no-progress",
        "--set",
        f"data={data}",
        "--set",
        f"tokenizer={tok}",
        "--set",
        f"out={out}",
        "--set",
        f"steps={STEPS}",
        "--set",
        "batch_size=8",
        "--set",
        "mesh=[2,1,1]",
        "--set",
        "checkpoint_every=3",
        "--set",
        "eval_every=12",
        "--set",
        "eval_batches=1",
        "--set",
        "warmup_steps=4",
        *[a for s in SMALL for a in ("--set", s)],
        *extra,
    ]


def _wait_for_checkpoint(run_dir: Path, proc: subprocess.Popen, timeout: float = 300) -> int:
    """Step of the first committed checkpoint (Orbax renames its temporary directory on commit)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        done = [int(p.name) for p in (run_dir / "checkpoints").glob("*") if p.name.isdigit()]
        if done:
            return min(done)
        if proc.poll() is not None:
            raise AssertionError(f"training ended before any checkpoint: {proc.stderr.read()}")
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared")


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    data, tok = prepare(tmp_path)
    env = cli_env(2, tmp_path / "jax_cache")
    straight = run_cli(_args(data, tok, tmp_path / "straight"), env)
    assert straight.returncode == 0, straight.stderr[-3000:]

    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        cli(_args(data, tok, killed_dir)),
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = _wait_for_checkpoint(killed_dir, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first < STEPS
    assert not (killed_dir / "model").exists()  # nothing that looks finished
    resumed_from = max(int(p.name) for p in (killed_dir / "checkpoints").glob("*") if p.name.isdigit())
    assert resumed_from < STEPS

    resumed = run_cli(_args(data, tok, killed_dir) + ["--resume"], env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"restored checkpoint of step {resumed_from}" in resumed.stderr

    a = load_file(str(tmp_path / "straight" / "model" / "params.safetensors"))
    b = load_file(str(killed_dir / "model" / "params.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), f"{name} differs after resume"
    # The logged losses after the restored step are the uninterrupted run's, bit for bit.
    la, lb = losses(tmp_path / "straight"), losses(killed_dir)
    assert sorted(lb) == list(range(1, STEPS + 1))
    assert all(la[s] == lb[s] for s in range(resumed_from + 1, STEPS + 1))


def test_resume_without_checkpoint_starts_fresh_and_finished_run_is_kept(tmp_path):
    """--resume on an empty out starts from step 0; a finished run resumed again changes nothing."""
    data, tok = prepare(tmp_path)
    env = cli_env(1, tmp_path / "jax_cache")
    args = _args(
        data,
        tok,
        tmp_path / "run",
        ["--set", "mesh=[1,1,1]", "--set", "steps=3", "--set", "dropout_rate=0", "--set", "eval_every=0", "--resume"],
    )
    first = run_cli(args, env)
    assert first.returncode == 0, first.stderr[-3000:]
    params = load_file(str(tmp_path / "run" / "model" / "params.safetensors"))
    again = run_cli(args, env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "restored checkpoint of step 3" in again.stderr
    after = load_file(str(tmp_path / "run" / "model" / "params.safetensors"))
    assert all(np.array_equal(params[k], after[k]) for k in params)
