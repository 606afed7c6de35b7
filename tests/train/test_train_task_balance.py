"""The task-balanced objective and task mixing inside real training runs: the same numbers on one
device, on a (2,2,2) mesh and with gradient accumulation; resume stays bit-identical with task
mixing on; per-task losses reach metrics.jsonl and the loss curve."""

import shutil

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

from chatcell_jax.train import Trainer
from tests.helpers.train import demo_config, metrics, prepare

BALANCED = ["loss_normalization=tasks", "task_weights={annotation: 2.0}", "task_sampling=uniform"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepare(tmp_path_factory.mktemp("balance"))


def _config(prepared, out, extra):
    return demo_config(
        prepared, out, "steps=4", "batch_size=8", "warmup_steps=1", "learning_rate=0.003", *BALANCED, *extra
    )


def _logged(run_dir, key):
    return [r[key] for r in metrics(run_dir) if key in r]


def test_same_objective_on_a_mesh_and_with_accumulation(prepared, tmp_path):
    assert jax.device_count() == 8
    # Dropout off: micro-batches draw their own dropout masks, so only without it is accumulating
    # the same computation as one batch.
    runs = {
        "one": (["mesh=[1,1,1]", "dropout_rate=0"], jax.devices()[:1]),
        "mesh": (["mesh=[2,2,2]", "dropout_rate=0"], None),
        "accum": (["mesh=[1,1,1]", "grad_accum_steps=4", "dropout_rate=0"], jax.devices()[:1]),
    }
    logged = {}
    for name, (extra, devices) in runs.items():
        Trainer(_config(prepared, tmp_path / name, extra), progress=False, devices=devices).run()
        logged[name] = {key: _logged(tmp_path / name, key) for key in ("objective", "loss", "loss_annotation")}
    assert len(logged["one"]["objective"]) == 4
    assert logged["one"]["objective"] != logged["one"]["loss"]  # the objective is not the token mean
    for name in ("mesh", "accum"):
        for key, values in logged[name].items():
            np.testing.assert_allclose(values, logged["one"][key], rtol=0, atol=2e-5, err_msg=f"{name} {key}")


def test_resume_with_task_mixing_is_bit_identical(prepared, tmp_path):
    extra = ["mesh=[1,1,1]", "steps=6", "checkpoint_every=3", "decay=constant", "dropout_rate=0.1"]
    straight = tmp_path / "straight"
    Trainer(_config(prepared, straight, extra), progress=False, devices=jax.devices()[:1]).run()
    resumed = tmp_path / "resumed"
    shutil.copytree(straight, resumed)
    shutil.rmtree(resumed / "checkpoints" / "6")
    shutil.rmtree(resumed / "model")
    Trainer(_config(prepared, resumed, extra), resume=True, progress=False, devices=jax.devices()[:1]).run()
    a = load_file(str(straight / "model" / "params.safetensors"))
    b = load_file(str(resumed / "model" / "params.safetensors"))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert _logged(straight, "objective")[3:] == _logged(resumed, "objective")[3:]


def test_per_task_losses_are_logged(prepared, tmp_path):
    out = tmp_path / "run"
    Trainer(
        _config(prepared, out, ["mesh=[1,1,1]", "steps=2", "eval_every=2", "eval_batches=2", "eval_generate=0"]),
        progress=False,
        devices=jax.devices()[:1],
    ).run()
    rows = metrics(out)
    final = rows[-1]
    for task in ("annotation", "random_generation", "pseudo_cell_generation"):
        assert final[f"valid_loss_{task}"] > 0 and final[f"loss_{task}"] > 0
    # The per-task validation losses combine to the overall one (token-weighted), so they are real.
    assert min(final[f"valid_loss_{t}"] for t in ("annotation", "random_generation")) <= final["valid_loss"]
    assert (out / "loss_curve.png").stat().st_size > 10_000
