"""Our jitted searches give the same tokens as transformers' generate() on the same random T5 weights."""
import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from chatcell_jax.decoding import GenerationConfig, row_keys  # noqa: E402
from chatcell_jax.generation import _search  # noqa: E402
from chatcell_jax.hf import load_model  # noqa: E402

VOCAB, MAX_NEW = 96, 10


def random_hf_t5(tmp_path, version: str):
    torch.manual_seed(0 if version == "v1.0" else 1)
    kwargs = dict(feed_forward_proj="relu", tie_word_embeddings=True) if version == "v1.0" else dict(
        feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    cfg = transformers.T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                                num_heads=4, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, **kwargs)
    model = transformers.T5ForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # a strong, varied head so EOS, ties of lengths and early stops all happen
        head = torch.randn(VOCAB, 32) * 3.0
        head[1] *= 1.6
        if version == "v1.0":
            model.shared.weight.copy_(head)
        else:
            model.lm_head.weight = torch.nn.Parameter(head)
    path = tmp_path / version
    model.save_pretrained(path)
    return transformers.T5ForConditionalGeneration.from_pretrained(path).eval(), path


@pytest.fixture(scope="module", params=["v1.0", "v1.1"])
def models(request, tmp_path_factory):
    jax.config.update("jax_default_matmul_precision", "highest")
    hf_model, path = random_hf_t5(tmp_path_factory.mktemp("hf"), request.param)
    config, model, _ = load_model(path)
    yield hf_model, config, model.params()
    jax.config.update("jax_default_matmul_precision", None)


def inputs(batch: int = 3, length: int = 9, seed: int = 0) -> np.ndarray:
    ids = np.random.default_rng(seed).integers(2, VOCAB, size=(batch, length))
    ids[1, 6:] = 0  # a padded prompt
    ids[1, 5] = 1
    return ids


_COMPILED = {}


def ours(config, params, ids, cfg):
    """One compiled search per (model, settings but the length penalty), as the Generator does."""
    ids = jnp.asarray(ids, jnp.int32)
    static = dataclasses.replace(cfg, length_penalty=1.0)
    key = (id(params), static)
    if key not in _COMPILED:
        _COMPILED[key] = jax.jit(lambda p, i, m, lp: _search(config, static, p, i, m,
                                                            row_keys(0, jnp.arange(i.shape[0])), lp))
    out = _COMPILED[key](params, ids, ids != 0, jnp.float32(cfg.length_penalty))
    return np.asarray(out.sequences[:, 0]), np.asarray(out.scores[:, 0])


def same_tokens(ours_seq: np.ndarray, hf_seq: np.ndarray) -> bool:
    """Equal up to the first EOS of each row (HF pads greedy rows with pad, beams with EOS)."""
    for a, b in zip(ours_seq, hf_seq):
        a, b = a.tolist(), b.tolist()
        a = a[: a.index(1) + 1] if 1 in a else a
        b = b[: b.index(1) + 1] if 1 in b else b
        if a != b:
            return False
    return True


@pytest.mark.parametrize("num_beams, length_penalty, early_stopping",
                         list(itertools.product([2, 4], [0.0, 1.0, 2.0], [False, True])))
def test_beam_search_matches_transformers(models, num_beams, length_penalty, early_stopping):
    hf_model, config, params = models
    ids = inputs()
    with torch.no_grad():
        hf = hf_model.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(ids != 0), num_beams=num_beams,
                               length_penalty=length_penalty, early_stopping=early_stopping, max_new_tokens=MAX_NEW,
                               do_sample=False, return_dict_in_generate=True, output_scores=True)
    cfg = GenerationConfig(max_new_tokens=MAX_NEW, num_beams=num_beams, length_penalty=length_penalty,
                           early_stopping=early_stopping)
    seqs, scores = ours(config, params, ids, cfg)
    assert same_tokens(seqs, hf.sequences.numpy())
    np.testing.assert_allclose(scores, hf.sequences_scores.numpy(), atol=1e-4)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0])
def test_greedy_is_num_beams_1(models, length_penalty):
    hf_model, config, params = models
    ids = inputs(seed=1)
    with torch.no_grad():
        hf = hf_model.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(ids != 0), num_beams=1,
                               length_penalty=length_penalty, max_new_tokens=MAX_NEW, do_sample=False)
    seqs, _ = ours(config, params, ids, GenerationConfig(max_new_tokens=MAX_NEW, num_beams=1,
                                                         length_penalty=length_penalty))
    assert same_tokens(seqs, hf.numpy())


def test_no_repeat_ngram_greedy_matches_transformers(models):
    hf_model, config, params = models
    ids = inputs(seed=2)
    with torch.no_grad():
        hf = hf_model.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(ids != 0),
                               no_repeat_ngram_size=2, max_new_tokens=MAX_NEW, do_sample=False)
    seqs, _ = ours(config, params, ids, GenerationConfig(max_new_tokens=MAX_NEW, no_repeat_ngram_size=2))
    assert same_tokens(seqs, hf.numpy())
