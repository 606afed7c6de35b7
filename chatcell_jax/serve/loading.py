"""From a model reference on the command line to a ready `Generator` and its data manifest.

A model reference is our model directory (`model_config.json`), a training run directory holding
one (`RUN/model`), one of a run's Orbax steps (`RUN/checkpoints/<step>`), or a Hugging Face T5
directory (`chatcell_jax.model.directory.load_model`). The tokenizer travels with the model
(`tokenizer/` or the HF files). The manifest of the training data (labels, gene vocabulary,
sentence settings) is looked up as `manifest.json` next to the model, in its run directory, or
given explicitly; models imported from elsewhere have none until one is given.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import jax

from chatcell_jax.errors import InputError
from chatcell_jax.model.directory import is_step_dir, resolve_model_ref
from chatcell_jax.serve.generation import Generator
from chatcell_jax.singlecell import manifest as manifest_lib
from chatcell_jax.singlecell.manifest import Manifest

log = logging.getLogger(__name__)


def find_manifest(model_dir: Path, explicit: str | Path | None = None) -> Manifest | None:
    """`explicit`, else manifest.json next to the model or in its run directory (for a step:
    RUN/checkpoints/<step> -> RUN), else the run's training data manifest."""
    if explicit:
        candidates = [Path(explicit)]
    else:
        run = model_dir.parent.parent if is_step_dir(model_dir) else model_dir.parent
        candidates = [model_dir / "manifest.json", run / "manifest.json", *_training_data_manifest(run)]
    for candidate in candidates:
        if candidate.is_file():
            return manifest_lib.read(candidate)
    if explicit:
        raise InputError(f"manifest {explicit} does not exist")
    return None


def _training_data_manifest(run_dir: Path) -> list[Path]:
    config = run_dir / "config.json"
    if not config.is_file():
        return []
    try:
        data = json.loads(config.read_text(encoding="utf-8")).get("data")
    except (json.JSONDecodeError, AttributeError):
        return []
    return [Path(data) / "manifest.json"] if isinstance(data, str) and data else []


def data_parallel_mesh(devices: int | str) -> jax.sharding.Mesh | None:
    """A (n, 1, 1) mesh over the first n local devices ("all": every one), or None for one device.

    Generation only splits the batch: every device holds the whole model and decodes its rows."""
    from chatcell_jax.model.sharding import make_mesh

    available = jax.local_devices()
    try:
        n = len(available) if devices == "all" else int(devices)
    except ValueError:
        n = 0
    if not 1 <= n <= len(available):
        raise InputError(
            f"--devices {devices!r}: give a number from 1 to {len(available)} (this machine's "
            f"{available[0].platform} devices) or 'all'"
        )
    return None if n == 1 else make_mesh((n, 1, 1), available[:n])


def load_generator(
    model_ref: str | Path,
    *,
    manifest: str | Path | None = None,
    batch_size: int = 16,
    max_source_length: int = 512,
    mesh: jax.sharding.Mesh | None = None,
    devices: int | str = 1,
    dtype: str | None = None,
) -> tuple[Generator, dict | None]:
    """The model's Generator and its manifest. `devices` > 1 (or "all") splits every batch over that
    many local devices (ignored when `mesh` is given); the batch size is then rounded up to a
    multiple of the device count, so that each device gets the same number of rows. `dtype`
    ("float32" or "bfloat16") overrides the model's compute dtype; None keeps the saved one."""
    from transformers import AutoTokenizer

    from chatcell_jax.model.directory import load_model

    mesh = mesh if mesh is not None else data_parallel_mesh(devices)
    if mesh is not None:
        from chatcell_jax.model.sharding import batch_shards

        shards = batch_shards(mesh)
        if batch_size % shards:
            rounded = shards * -(-batch_size // shards)
            log.info("batch size %d -> %d: a multiple of the %d devices", batch_size, rounded, shards)
            batch_size = rounded
    model_dir = resolve_model_ref(model_ref)
    config, model, tokenizer_dir = load_model(model_dir, mesh=mesh, **({"dtype": dtype} if dtype else {}))
    if tokenizer_dir is None:
        raise InputError(f"{model_dir} has no tokenizer files; save the model with its tokenizer directory")
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    generator = Generator(
        config, model.params(), tokenizer, max_source_length=max_source_length, batch_size=batch_size, mesh=mesh
    )
    return generator, find_manifest(model_dir, manifest)


def require_manifest(manifest: Manifest | None, what: str) -> Manifest:
    if manifest is None:
        raise InputError(
            f"{what} needs the training data's manifest (labels, sentence settings); pass --manifest "
            "DATA_DIR/manifest.json"
        )
    return manifest
