"""Hugging Face interop: parity with transformers' T5ForConditionalGeneration (torch tests skip
without torch), the model directory, round trips, bad input, atomic writes and the CLI."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from chatcell_jax.cli import main
from chatcell_jax.errors import InputError
from chatcell_jax.hf.convert import export_hf, import_hf, save_hf
from chatcell_jax.model import T5, count_params
from chatcell_jax.model.directory import load_model, save_model
from chatcell_jax.model.params import flatten, unflatten
from tests.helpers.model import V10, V11, VOCAB, batch, config, logits

TOL = 1e-4  # fp32, matmul precision "highest"


# --- builders ----------------------------------------------------------------------------------


def hf_model(kind: str, seed: int = 0):
    """A random transformers T5 (built from a config, nothing downloaded). Layer norms get random
    scales so that a swapped or dropped norm shows. kind: "v1.0"; "v1.1" (own lm_head, no rescale);
    "v1.1-shared-head" (transformers 5's fresh v1.1: head tied to `shared` but not rescaled)."""
    torch = pytest.importorskip("torch")
    from transformers import T5Config as HFConfig
    from transformers import T5ForConditionalGeneration

    torch.manual_seed(seed)
    fields = dict(V10 if kind == "v1.0" else V11)
    model = T5ForConditionalGeneration(HFConfig(**fields, decoder_start_token_id=0)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.copy_(1 + 0.3 * torch.randn_like(p))
        if kind == "v1.1":
            model.lm_head.weight = torch.nn.Parameter(torch.randn(VOCAB, fields["d_model"]))
    return model


def hf_logits(model, b) -> np.ndarray:
    import torch

    ids, mask, dec, dec_mask = (torch.as_tensor(a, dtype=torch.long) for a in b)
    with torch.no_grad():
        return model(
            input_ids=ids, attention_mask=mask, decoder_input_ids=dec, decoder_attention_mask=dec_mask
        ).logits.numpy()


def our_logits(model: T5, b) -> np.ndarray:
    with jax.default_matmul_precision("highest"):
        return logits(model, b)[..., :VOCAB]


def random_ours(kind: str, seed: int = 0) -> T5:
    """Our random model with random norm scales (our init sets them to 1)."""
    m = T5(config(kind), rngs=nnx.Rngs(seed))
    flat = flatten(m.params())
    rng = np.random.RandomState(seed)
    for k, v in flat.items():
        if k.endswith("norm"):
            flat[k] = 1 + 0.3 * rng.randn(*v.shape).astype(np.float32)
    return T5.from_params(m.config, unflatten(flat))


def make_tokenizer(directory: Path) -> None:
    """A small T5-style fast tokenizer built in-process (no hub)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(f"▁{w}", -1.0) for w in ("cd4", "cell", "gene", "b")]
    tok = Tokenizer(models.Unigram(pieces, unk_id=2))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    T5TokenizerFast(
        tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>", extra_ids=0
    ).save_pretrained(str(directory))


class _Captured(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def load_in_transformers(path: Path):
    """from_pretrained with its loading info and every log line / warning it produced."""
    from transformers import T5ForConditionalGeneration

    handler, logger = _Captured(), logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model, info = T5ForConditionalGeneration.from_pretrained(str(path), output_loading_info=True)
    finally:
        logger.removeHandler(handler)
    return model.eval(), info, handler.messages + [str(w.message) for w in caught]


# --- parity with transformers --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["v1.0", "v1.1", "v1.1-shared-head"])
def test_import_matches_transformers(tmp_path, kind):
    hf = hf_model(kind)
    hf.save_pretrained(str(tmp_path / "hf"))
    make_tokenizer(tmp_path / "hf")
    import_hf(tmp_path / "hf", tmp_path / "ours")
    config, model, tok = load_model(tmp_path / "ours")
    assert tok == tmp_path / "ours" / "tokenizer" and (tok / "tokenizer.json").is_file()
    assert config.tie_word_embeddings == (kind == "v1.0") and config.vocab_size == VOCAB
    b = batch()
    diff = np.abs(our_logits(model, b) - hf_logits(hf, b)).max()
    assert diff <= TOL, f"{kind}: max |diff| {diff}"
    # An HF directory is a model reference too (converted in memory).
    _, direct, tok = load_model(tmp_path / "hf")
    assert tok == tmp_path / "hf"
    np.testing.assert_array_equal(our_logits(direct, b), our_logits(model, b))


@pytest.mark.parametrize("kind", ["v1.0", "v1.1"])
def test_export_loads_in_transformers_without_weight_warnings(tmp_path, kind):
    pytest.importorskip("torch")
    from safetensors.numpy import load_file
    from transformers import AutoTokenizer

    ours = random_ours(kind, seed=4)
    make_tokenizer(tmp_path / "tok")
    save_model(ours, None, tmp_path / "ours", tokenizer_dir=tmp_path / "tok")
    export_hf(tmp_path / "ours", tmp_path / "hf")
    names = set(load_file(str(tmp_path / "hf" / "model.safetensors")))
    assert ("lm_head.weight" in names) == (kind == "v1.1")
    assert load_file(str(tmp_path / "hf" / "model.safetensors"))["shared.weight"].shape == (VOCAB, 32)
    hf, info, messages = load_in_transformers(tmp_path / "hf")
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    bad = [
        m
        for m in messages
        if any(w in m.lower() for w in ("missing", "unexpected", "newly initialized", "not used", "mismatch"))
    ]
    assert not bad, bad
    assert (hf.lm_head.weight.data_ptr() == hf.shared.weight.data_ptr()) == (kind == "v1.0")
    assert hf.config.scale_decoder_outputs == (kind == "v1.0")
    b = batch(seed=5)
    diff = np.abs(our_logits(ours, b) - hf_logits(hf, b)).max()
    assert diff <= TOL, f"{kind}: max |diff| {diff}"
    gen = json.loads((tmp_path / "hf" / "generation_config.json").read_text())
    assert gen["decoder_start_token_id"] == 0 and gen["eos_token_id"] == 1
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    assert tok("cd4 cell").input_ids == AutoTokenizer.from_pretrained(str(tmp_path / "tok"))("cd4 cell").input_ids


def test_relative_position_buckets_match_transformers():
    pytest.importorskip("torch")
    import torch
    from transformers.models.t5.modeling_t5 import T5Attention

    from chatcell_jax.model.layers import relative_position_bucket

    rel = np.arange(-700, 701)
    for bidirectional in (True, False):
        for buckets, distance in ((32, 128), (8, 12)):
            theirs = T5Attention._relative_position_bucket(torch.as_tensor(rel), bidirectional, buckets, distance)
            ours = relative_position_bucket(rel, bidirectional, buckets, distance)
            np.testing.assert_array_equal(np.asarray(ours), theirs.numpy())


@pytest.mark.parametrize("kind", ["v1.0", "v1.1"])
def test_parameter_count_matches_transformers(kind):
    hf = hf_model(kind)
    assert count_params(config(kind)) == hf.num_parameters()


def test_pytorch_bin_is_read_with_weights_only(tmp_path):
    torch = pytest.importorskip("torch")
    hf = hf_model("v1.1")
    hf.save_pretrained(str(tmp_path / "st"))
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "config.json").write_text((tmp_path / "st" / "config.json").read_text())
    # bfloat16 tensors too: they arrive as float32 params holding the bf16 values.
    state = {k: v.to(torch.bfloat16) for k, v in hf.state_dict().items()}
    torch.save(state, str(tmp_path / "bin" / "pytorch_model.bin"))
    _, from_bin, _ = load_model(tmp_path / "bin")
    _, from_st, _ = load_model(tmp_path / "st")
    for a, b in zip(jax.tree.leaves(from_bin.params()), jax.tree.leaves(from_st.params())):
        assert a.dtype == np.float32
        np.testing.assert_array_equal(a, np.asarray(jax.numpy.asarray(b).astype(jax.numpy.bfloat16)).astype(np.float32))


# --- round trips (no torch needed) -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["v1.0", "v1.1"])
def test_import_export_import_is_bit_exact(tmp_path, kind):
    from safetensors.numpy import load_file

    save_hf(random_ours(kind, seed=2), tmp_path / "hf1")
    import_hf(tmp_path / "hf1", tmp_path / "a")
    export_hf(tmp_path / "a", tmp_path / "hf2")
    import_hf(tmp_path / "hf2", tmp_path / "b")
    for name in ("config.json", "generation_config.json"):
        assert (tmp_path / "hf1" / name).read_text() == (tmp_path / "hf2" / name).read_text()
    one, two = (
        load_file(str(tmp_path / "hf1" / "model.safetensors")),
        load_file(str(tmp_path / "hf2" / "model.safetensors")),
    )
    assert one.keys() == two.keys()
    for k in one:
        np.testing.assert_array_equal(one[k], two[k])
    pa, pb = (
        load_file(str(tmp_path / "a" / "params.safetensors")),
        load_file(str(tmp_path / "b" / "params.safetensors")),
    )
    assert pa.keys() == pb.keys() and all(np.array_equal(pa[k], pb[k]) for k in pa)
    assert json.loads((tmp_path / "a" / "model_config.json").read_text()) == json.loads(
        (tmp_path / "b" / "model_config.json").read_text()
    )


def test_saved_model_directory_reloads_identically(tmp_path):
    m = random_ours("v1.1", seed=3)
    save_model(m, None, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model_config.json", "params.safetensors"]
    config, again, tok = load_model(tmp_path / "m", scan_layers=False)
    assert tok is None and config.scan_layers is False
    for a, b in zip(jax.tree.leaves(again.params()), jax.tree.leaves(m.params())):
        np.testing.assert_array_equal(a, b)


# --- bad input and atomic writes ---------------------------------------------------------------------


def test_bad_checkpoints_are_input_errors(tmp_path):
    save_hf(random_ours("v1.0"), tmp_path / "hf")
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())

    def variant(name, config=None, drop_weights=False):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(json.dumps(config or cfg))
        if not drop_weights:
            (d / "model.safetensors").write_bytes((tmp_path / "hf" / "model.safetensors").read_bytes())
        return d

    with pytest.raises(InputError, match="model_type='bert'"):
        import_hf(variant("bert", {"model_type": "bert", "architectures": ["BertModel"]}), tmp_path / "o1")
    with pytest.raises(InputError, match="no weights"):
        import_hf(variant("noweights", drop_weights=True), tmp_path / "o2")
    with pytest.raises(InputError, match=r"DenseReluDense\.wi\.weight.*shape"):
        import_hf(variant("shape", {**cfg, "d_ff": 65}), tmp_path / "o3")
    with pytest.raises(InputError, match=r"block\.2\..*no tensor|no tensor.*block\.2\."):
        import_hf(variant("layers", {**cfg, "num_layers": 3}), tmp_path / "o4")
    with pytest.raises(InputError, match="not a model"):
        load_model(tmp_path)
    with pytest.raises(InputError, match="no config.json"):
        import_hf(tmp_path / "nowhere", tmp_path / "o5")
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 6))


def test_failed_write_leaves_nothing_and_foreign_dirs_are_kept(tmp_path, monkeypatch):
    m = random_ours("v1.0")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("chatcell_jax.model.directory.copy_tokenizer", boom)
    with pytest.raises(OSError, match="disk full"):
        save_model(m, None, tmp_path / "out", tokenizer_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temp dir
    monkeypatch.undo()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a previous output"):
        save_model(m, None, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    save_model(m, None, tmp_path / "out")
    save_model(m, None, tmp_path / "out")  # an earlier output is replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "out"]


def test_cli_import_and_export(tmp_path, capsys):
    save_hf(random_ours("v1.1"), tmp_path / "hf")
    assert main(["import-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "m")]) == 0
    assert main(["export-hf", str(tmp_path / "m"), "--out", str(tmp_path / "hf2")]) == 0
    assert (tmp_path / "hf2" / "model.safetensors").read_bytes() == (tmp_path / "hf" / "model.safetensors").read_bytes()
    assert main(["export-hf", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2
    assert "nothing does not exist; train one" in capsys.readouterr().err
