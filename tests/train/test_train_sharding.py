"""Sharded training equals single-device training: same 5 steps, same losses (fp32, within 1e-5)."""

import jax
import numpy as np
import pytest

from chatcell_jax.train import Trainer
from tests.helpers.train import demo_config, losses, prepare


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepare(tmp_path_factory.mktemp("shard"))


def _run(prepared, out, mesh, devices):
    # Dropout on: its keys must not depend on the layout either. The plain tied tiny model and the
    # token mean, as this test has always run (the task-balanced objective on meshes:
    # test_train_task_balance.py); the demo recipe's 36-nat initial loss would eat the tolerance.
    config = demo_config(
        prepared,
        out,
        "steps=5",
        "batch_size=8",
        f"mesh={mesh}",
        "warmup_steps=2",
        "learning_rate=0.003",
        "model=tiny",
        "loss_normalization=tokens",
        "task_sampling=proportional",
    )
    trainer = Trainer(config, progress=False, devices=devices)
    trainer.run()
    return losses(out), trainer


def test_meshes_match_one_device(prepared, tmp_path):
    assert jax.device_count() == 8
    reference, single = _run(prepared, tmp_path / "one", "[1,1,1]", jax.devices()[:1])
    assert sorted(reference) == [1, 2, 3, 4, 5]
    assert reference[5] < reference[1]  # it trains
    for mesh in ("[8,1,1]", "[2,2,2]", "[1,4,2]"):
        got, trainer = _run(prepared, tmp_path / mesh.strip("[]").replace(",", "x"), mesh, None)
        assert dict(trainer.mesh.shape) == dict(zip(("data", "fsdp", "model"), map(int, mesh.strip("[]").split(","))))
        np.testing.assert_allclose(
            [got[s] for s in range(1, 6)],
            [reference[s] for s in range(1, 6)],
            rtol=0,
            atol=1e-5,
            err_msg=f"mesh {mesh}",
        )
        if mesh == "[1,4,2]":  # parameters really are split: the embedding over model, d_model over fsdp
            spec = trainer.state.params["shared"].sharding.spec
            assert spec == jax.sharding.PartitionSpec("model", "fsdp"), spec
