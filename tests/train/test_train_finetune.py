"""ChatCell's recipe: fine-tune a pretrained T5 whose vocabulary lacks the new gene words."""

import jax
import numpy as np
from transformers import AutoTokenizer

from chatcell_jax.model import T5, T5Config
from chatcell_jax.model.directory import load_model, save_model
from chatcell_jax.model.params import init_params
from chatcell_jax.model.sharding import make_mesh
from chatcell_jax.train import train
from chatcell_jax.train.config import load_config
from chatcell_jax.train.model_init import build_params
from tests.helpers.train import SMALL, metrics, prepare

MISSING = 40  # tokens the "pretrained" model has never seen


def test_pretrained_model_grows_its_vocabulary_and_trains(tmp_path):
    data, tok = prepare(tmp_path)
    size = len(AutoTokenizer.from_pretrained(str(tok)))
    base_cfg = T5Config(
        vocab_size=size - MISSING,
        d_model=64,
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        feed_forward_proj="relu",
        tie_word_embeddings=True,
    )
    base = T5.from_params(base_cfg, init_params(base_cfg, jax.random.key(3)))
    save_model(base, None, tmp_path / "pretrained")
    old = np.asarray(base.params()["shared"])[: size - MISSING]

    sets = [
        f"data={data}",
        f"tokenizer={tok}",
        f"model={tmp_path / 'pretrained'}",
        "mesh=[2,2,2]",
        "steps=3",
        "batch_size=8",
        "eval_every=0",
        "warmup_steps=1",
        "learning_rate=0.003",
        *SMALL,
    ]
    config = load_config("configs/train/demo.yaml", sets + [f"out={tmp_path / 'run'}"])
    cfg, params = build_params(config, size, make_mesh((2, 2, 2)))
    assert cfg.vocab_size == size and cfg.d_model == 64
    table = np.asarray(params["shared"])
    np.testing.assert_array_equal(table[: size - MISSING], old)  # old rows bit for bit
    np.testing.assert_allclose(
        table[size - MISSING : size], np.broadcast_to(old.mean(axis=0), (MISSING, 64)), rtol=0, atol=1e-6
    )  # new rows start at the centroid
    assert not table[size:].any()  # vocabulary padding stays zero

    run = train(config, progress=False)
    assert sorted(r["step"] for r in metrics(run) if "loss" in r) == [1, 2, 3]
    trained_cfg, trained, _ = load_model(run / "model")
    assert trained_cfg.vocab_size == size
    # Training moved the new words' rows away from the centroid they started at.
    assert not np.allclose(np.asarray(trained.params()["shared"])[size - MISSING : size], table[size - MISSING : size])
