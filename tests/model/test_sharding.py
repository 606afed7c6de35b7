"""Meshes, logical axis rules and born-sharded models on 8 fake CPU devices (tests/conftest.py)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from chatcell_jax.errors import InputError
from chatcell_jax.model import T5
from chatcell_jax.model.directory import load_model, save_model
from chatcell_jax.model.sharding import (
    LOGICAL_AXIS_RULES,
    batch_sharding,
    create_sharded_model,
    fit_config,
    logical_to_spec,
    make_mesh,
    param_shardings,
)
from tests.helpers.model import VOCAB, batch, config, logits


@pytest.fixture(scope="module")
def reference():
    """Single-device model and logits for a batch of 8 rows (divisible by every data x fsdp size).

    v1.0 (ChatCell's kind): its d_model**-0.5-scaled logits are O(1). The untied v1.1 head of a
    random model gives logits near 10, where fp32 summation-order noise alone reaches ~1e-5."""
    m = T5(config("v1.0"), rngs=nnx.Rngs(7))
    b = batch(b=8, s=11, t=6)
    return m, b, logits(m, b)


def test_make_mesh_fills_and_uses_auto_axes():
    assert len(jax.devices()) == 8
    mesh = make_mesh((2, -1, 2))
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "model": 2}
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
    assert dict(make_mesh().shape) == {"data": 8, "fsdp": 1, "model": 1}
    for bad in ((3, -1, 1), (2, 2, 1), (-1, -1, 2), (2, 2)):
        with pytest.raises(InputError, match="mesh shape"):
            make_mesh(bad)


def test_logical_rules_map_names_once_and_respect_divisibility():
    rules = dict(LOGICAL_AXIS_RULES)
    assert rules["batch"] == ("data", "fsdp") and rules["vocab"] == "model" and rules["embed"] == "fsdp"
    # Without a mesh: the rules verbatim, except that a mesh axis is never used twice.
    assert logical_to_spec(("batch", "length", "embed")) == P(("data", "fsdp"), None, None)
    mesh = make_mesh((2, 2, 2))
    assert logical_to_spec(("vocab", "embed"), (128, 32), mesh) == P("model", "fsdp")
    assert logical_to_spec(("layers", "embed", "heads", "kv"), (2, 32, 4, 8), mesh) == P(None, "fsdp", "model", None)
    assert logical_to_spec(("relpos_buckets", "heads"), (8, 3), mesh) == P(None, None)  # 3 heads: replicated
    assert logical_to_spec(("mlp", "heads"), (4, 4), mesh) == P("model", None)  # a mesh axis is used once
    assert logical_to_spec(("batch",), (8,), make_mesh((8, 1, 1))) == P("data")
    assert batch_sharding(mesh).spec == P(("data", "fsdp"))


@pytest.mark.parametrize("shape", [(8, 1, 1), (2, 2, 2), (1, 2, 4)])
def test_sharded_init_matches_single_device(reference, shape):
    single, b, want = reference
    mesh = make_mesh(shape)
    model = create_sharded_model(single.config, mesh, seed=7)
    params = model.params()
    for got, ref in zip(jax.tree.leaves(params), jax.tree.leaves(single.params())):
        # Same values however placed, to the last bits: jax 0.12 fuses the sharded initialiser's
        # scaling differently and a few values differ by one ulp (3.7e-9 on 0.05).
        np.testing.assert_array_max_ulp(np.asarray(got), np.asarray(ref), maxulp=2)
    shared = params["shared"].sharding
    assert shared.mesh.shape == mesh.shape
    assert shared.spec == logical_to_spec(("vocab", "embed"), params["shared"].shape, mesh)
    if shape != (8, 1, 1):
        assert params["encoder"]["layers"]["wi"].sharding.spec == P(None, "fsdp", "model")
        assert (
            len(params["shared"].addressable_shards) == 8
            and params["shared"].addressable_shards[0].data.shape[0] < params["shared"].shape[0]
        )
    placed = tuple(jax.device_put(a, batch_sharding(mesh)) for a in b)
    got = logits(model, placed)
    assert np.abs(want[..., :VOCAB]).max() > 1.0  # not a trivially small output
    assert np.abs(got[..., :VOCAB] - want[..., :VOCAB]).max() <= 1e-5


def test_vocab_padding_follows_an_odd_model_axis():
    mesh = make_mesh((1, 1, 3), devices=jax.devices()[:3])
    cfg = fit_config(config("v1.0"), mesh)
    assert cfg.padded_vocab_size == 384 and cfg.padded_vocab_size % 3 == 0
    shardings = param_shardings(cfg, mesh)
    assert shardings["shared"].spec == P("model", None)  # 384 rows split 3 ways; d_model stays whole
    assert shardings["encoder"]["relpos"].spec == P(None, None)  # 4 heads do not split 3 ways


def test_load_model_onto_a_mesh(tmp_path, reference):
    single = reference[0]
    save_model(single, None, tmp_path / "m")
    mesh = make_mesh((2, 2, 2))
    _, model, _ = load_model(tmp_path / "m", mesh=mesh)
    q = model.params()["decoder"]["layers"]["cross_q"]
    assert q.sharding.spec == P(None, "fsdp", "model", None)
    np.testing.assert_array_equal(np.asarray(q), np.asarray(single.params()["decoder"]["layers"]["cross_q"]))
