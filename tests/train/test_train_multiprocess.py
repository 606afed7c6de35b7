"""Two processes x 2 CPU devices (gloo on 127.0.0.1) train exactly like one process x 4 devices,
with the task-balanced objective and task mixing (their weights are counted over the global batch)."""

import socket
import subprocess

import numpy as np
import pytest

from tests.helpers.train import REPO, SMALL, cli, cli_env, losses, prepare, run_cli

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _args(data, tok, out, mesh):
    sets = [
        f"data={data}",
        f"tokenizer={tok}",
        f"out={out}",
        "steps=5",
        "batch_size=8",
        f"mesh={mesh}",
        "eval_every=5",
        "eval_batches=2",
        "warmup_steps=2",
        "learning_rate=0.003",
        "loss_normalization=tasks",
        "task_sampling=uniform",
        "model=tiny",
        *SMALL,
    ]
    return ["train", "--config", "configs/train/demo.yaml", "--no-progress", *[a for s in sets for a in ("--set", s)]]


def test_two_processes_equal_one(tmp_path):
    data, tok = prepare(tmp_path)
    cache = tmp_path / "jax_cache"
    one = run_cli(_args(data, tok, tmp_path / "one", "[2,2,1]"), cli_env(4, cache))
    assert one.returncode == 0, one.stderr[-3000:]

    address = f"127.0.0.1:{_free_port()}"
    procs = [
        subprocess.Popen(
            cli(
                _args(data, tok, tmp_path / "two", "[2,2,1]")
                + ["--set", f"coordinator_address={address}", "--set", "num_processes=2", "--set", f"process_id={i}"]
            ),
            env=cli_env(2, cache),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert "process 1 of 2, 2 local / 4 global devices" in outs[1][1]

    a, b = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5]
    np.testing.assert_allclose([b[s] for s in range(1, 6)], [a[s] for s in range(1, 6)], rtol=0, atol=1e-5)
    objectives = [
        [r["objective"] for r in _metrics(run) if "objective" in r] for run in (tmp_path / "one", tmp_path / "two")
    ]
    np.testing.assert_allclose(objectives[1], objectives[0], rtol=0, atol=1e-5)
    valid = [
        [r["valid_loss"] for r in m if "valid_loss" in r]
        for m in (_metrics(tmp_path / "one"), _metrics(tmp_path / "two"))
    ]
    np.testing.assert_allclose(valid[1], valid[0], rtol=0, atol=1e-5)
    # The model written by process 0 from parameters spread over both processes.
    assert (tmp_path / "two" / "model" / "params.safetensors").is_file()
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints" / "5" / "data").glob("process_*")) == [
        "process_0-of-2.json",
        "process_1-of-2.json",
    ]


def _metrics(run_dir):
    from tests.helpers.train import metrics

    return metrics(run_dir)
