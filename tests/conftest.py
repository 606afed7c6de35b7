"""Shared test setup. Eight fake CPU devices for every test (must be set before jax is imported)."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A real tiny model: the bundled PBMC cells prepared, a tokenizer built, a few training steps.

    Shared by the serving tests (generate/annotate/chat/web); returns (run_dir, data_dir).
    """
    from chatcell_jax.singlecell import prepare as ins
    from chatcell_jax.tokenizer import build_tokenizer
    from chatcell_jax.train import train
    from chatcell_jax.train.config import load_config

    root = tmp_path_factory.mktemp("trained")
    ins.prepare_dataset(root / "data", cells_input=ins.demo_data_path(), options=ins.PrepareOptions(top_k=30))
    build_tokenizer(root / "data", root / "tok")
    config = load_config(
        overrides=[
            f"data={root / 'data'}",
            f"tokenizer={root / 'tok'}",
            f"out={root / 'run'}",
            "steps=12",
            "batch_size=8",
            "eval_every=12",
            "eval_batches=2",
            "max_source_length=128",
            "max_target_length=64",
            "learning_rate=0.003",
        ]
    )
    return train(config, progress=False), root / "data"
