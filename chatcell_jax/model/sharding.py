"""Device mesh, logical axis rules, and placing T5 parameters on the mesh.

Mesh axes are ("data", "fsdp", "model"): batch over data x fsdp, weights' `embed` dimension over
fsdp (ZeRO-3 style), and vocab / heads / mlp over model (tensor parallel). All axes are
`AxisType.Auto`, so XLA propagates shardings from parameters and inputs (jax >= 0.12's default,
Explicit, would demand an out_sharding on every gather).

Parameters are born sharded: `create_sharded_model` runs the initialiser under `jax.jit` with
`out_shardings`, so no device ever holds a full copy.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import jax
from jax.sharding import NamedSharding, PartitionSpec

from chatcell_jax.errors import InputError
from chatcell_jax.model.config import T5Config, padded_vocab_size
from chatcell_jax.model.params import Params, flatten, init_params, param_specs, unflatten

log = logging.getLogger(__name__)

MESH_AXES = ("data", "fsdp", "model")

# The one table mapping logical axis names (t5x vocabulary) to mesh axes; None = replicated.
LOGICAL_AXIS_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("vocab", "model"),
    ("embed", "fsdp"),
    ("mlp", "model"),
    ("heads", "model"),
    ("joined_kv", "model"),
    ("kv", None),
    ("layers", None),
    ("length", None),
    ("relpos_buckets", None),
)


def make_mesh(shape: Sequence[int] = (-1, 1, 1), devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
    """A (data, fsdp, model) mesh; one -1 entry takes the remaining devices."""
    devices = list(jax.devices() if devices is None else devices)
    shape = list(shape)
    if len(shape) != 3 or shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
        raise InputError(
            f"mesh shape {tuple(shape)} must be three positive sizes (data, fsdp, model), one of which may be -1"
        )
    if -1 in shape:
        rest = math.prod(s for s in shape if s != -1)
        if len(devices) % rest:
            raise InputError(f"mesh shape {tuple(shape)} does not divide {len(devices)} devices")
        shape[shape.index(-1)] = len(devices) // rest
    if math.prod(shape) != len(devices):
        raise InputError(f"mesh shape {tuple(shape)} needs {math.prod(shape)} devices, there are {len(devices)}")
    auto = (jax.sharding.AxisType.Auto,) * 3
    return jax.make_mesh(tuple(shape), MESH_AXES, axis_types=auto, devices=devices)


def logical_to_spec(
    axes: Sequence[str | None],
    shape: Sequence[int] | None = None,
    mesh: jax.sharding.Mesh | None = None,
    rules=LOGICAL_AXIS_RULES,
) -> PartitionSpec:
    """PartitionSpec for logical `axes`. A mesh axis is used at most once; with `shape` and `mesh`,
    a dimension the mesh axes do not divide is left replicated (JAX rejects uneven shardings)."""
    table = dict(rules)
    used: set[str] = set()
    out = []
    for i, name in enumerate(axes):
        target = table.get(name) if name is not None else None
        mesh_axes = tuple(a for a in ((target,) if isinstance(target, str) else (target or ())) if a not in used)
        if mesh is not None:
            mesh_axes = tuple(a for a in mesh_axes if mesh.shape[a] > 1)
            if shape is not None and mesh_axes and shape[i] % math.prod(mesh.shape[a] for a in mesh_axes):
                log.debug("dimension %s of size %d not divisible by %s: replicated", name, shape[i], mesh_axes)
                mesh_axes = ()
        used.update(mesh_axes)
        out.append(None if not mesh_axes else mesh_axes[0] if len(mesh_axes) == 1 else mesh_axes)
    return PartitionSpec(*out)


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Sharding of a [batch, ...] input array: rows split over data x fsdp."""
    return NamedSharding(mesh, logical_to_spec(("batch",)))


def batch_shards(mesh: jax.sharding.Mesh) -> int:
    """How many pieces `batch_sharding` splits the rows of a batch into (data x fsdp)."""
    return mesh.shape["data"] * mesh.shape["fsdp"]


def fit_config(config: T5Config, mesh: jax.sharding.Mesh) -> T5Config:
    """The config with vocabulary padding that also divides the model axis."""
    model_axis = mesh.shape["model"]
    if config.padded_vocab_size % model_axis == 0:
        return config
    multiple = math.lcm(config.vocab_multiple, model_axis)
    log.info("vocab_multiple %d -> %d to divide the model axis (%d)", config.vocab_multiple, multiple, model_axis)
    assert padded_vocab_size(config.vocab_size, multiple) % model_axis == 0
    return config.replace(vocab_multiple=multiple)


def param_shardings(config: T5Config, mesh: jax.sharding.Mesh) -> Params:
    """NamedSharding for every parameter, in the nested layout of `T5.params()`."""
    flat = {
        path: NamedSharding(mesh, logical_to_spec(spec.axes, spec.shape, mesh))
        for path, spec in flatten(param_specs(config)).items()
    }
    return unflatten(flat)


def shard_params(params: Params, config: T5Config, mesh: jax.sharding.Mesh) -> Params:
    """Place (host or device) parameters on the mesh."""
    return jax.device_put(params, param_shardings(config, mesh))


def create_sharded_model(config: T5Config, mesh: jax.sharding.Mesh, seed: int = 0):
    """A freshly initialised T5 whose parameters are created already sharded on `mesh`.

    Same values as `T5(config, rngs=nnx.Rngs(seed))` on one device. The returned model's config
    may have a larger `vocab_multiple` so the table divides the model axis.
    """
    from flax import nnx

    from chatcell_jax.model.t5 import T5

    config = fit_config(config, mesh)
    key = nnx.Rngs(seed).params()
    init = jax.jit(lambda k: init_params(config, k), out_shardings=param_shardings(config, mesh))
    return T5.from_params(config, init(key))
