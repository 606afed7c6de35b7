"""Our jitted searches give the same tokens as transformers' generate() on the same random T5 weights."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from chatcell_jax.model.directory import load_model  # noqa: E402
from chatcell_jax.serve.decoding import GenerationConfig, row_keys  # noqa: E402
from chatcell_jax.serve.generation import _search  # noqa: E402

VOCAB, MAX_NEW = 96, 10


def random_hf_t5(tmp_path, version: str):
    """A random T5 whose searches exercise every rule: rows end at different lengths, and the length
    penalty, early stopping and min_new_tokens all change some answers (test_the_models_exercise_the_rules
    checks this on transformers' own outputs). Plain random weights do not: a tied (v1.0) model
    mostly repeats its previous token, the decoder start token (pad, 0) first, and never ends."""
    torch.manual_seed(1 if version == "v1.0" else 0)
    kwargs = (
        dict(feed_forward_proj="relu", tie_word_embeddings=True)
        if version == "v1.0"
        else dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    )
    cfg = transformers.T5Config(
        vocab_size=VOCAB,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
        **kwargs,
    )
    model = transformers.T5ForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        head = torch.randn(VOCAB, 32) * 3.0
        head[1] *= 2.2  # EOS likely enough to compete
        head[0] *= 0.2  # pad / start token: not a self-reinforcing answer
        if version == "v1.0":
            model.shared.weight.copy_(head)
            # Decoder layers strong against the residual embedding, so a tied model does not just
            # echo its input token.
            for name, weight in model.decoder.named_parameters():
                if name.endswith((".o.weight", ".wo.weight")):
                    weight.mul_(20.0)
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


def inputs(batch: int = 6, length: int = 9, seed: int = 0) -> np.ndarray:
    ids = np.random.default_rng(seed).integers(2, VOCAB, size=(batch, length))
    ids[1, 6:] = 0  # a padded prompt
    ids[1, 5] = 1
    return ids


_COMPILED = {}


def search(config, params, ids, cfg):
    """All returned hypotheses; one compiled search per (model, settings but the length penalty),
    as the Generator does."""
    ids = jnp.asarray(ids, jnp.int32)
    static = dataclasses.replace(cfg, length_penalty=1.0)
    key = (id(params), static)
    if key not in _COMPILED:
        _COMPILED[key] = jax.jit(
            lambda p, i, m, lp: _search(config, static, p, i, m, row_keys(0, jnp.arange(i.shape[0])), lp)
        )
    return _COMPILED[key](params, ids, ids != 0, jnp.float32(cfg.length_penalty))


def ours(config, params, ids, cfg):
    """The best hypothesis of each input: sequences [B, L] and scores [B]."""
    out = search(config, params, ids, cfg)
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


@pytest.mark.parametrize(
    "num_beams, length_penalty, early_stopping", list(itertools.product([2, 4], [0.0, 1.0, 2.0], [False, True]))
)
def test_beam_search_matches_transformers(models, num_beams, length_penalty, early_stopping):
    hf_model, config, params = models
    ids = inputs(seed=3)
    with torch.no_grad():
        hf = hf_model.generate(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(ids != 0),
            num_beams=num_beams,
            length_penalty=length_penalty,
            early_stopping=early_stopping,
            max_new_tokens=MAX_NEW,
            do_sample=False,
            return_dict_in_generate=True,
            output_scores=True,
        )
    cfg = GenerationConfig(
        max_new_tokens=MAX_NEW, num_beams=num_beams, length_penalty=length_penalty, early_stopping=early_stopping
    )
    seqs, scores = ours(config, params, ids, cfg)
    assert same_tokens(seqs, hf.sequences.numpy())
    np.testing.assert_allclose(scores, hf.sequences_scores.numpy(), atol=1e-4)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0])
def test_greedy_is_num_beams_1(models, length_penalty):
    hf_model, config, params = models
    ids = inputs(seed=1)
    with torch.no_grad():
        hf = hf_model.generate(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(ids != 0),
            num_beams=1,
            length_penalty=length_penalty,
            max_new_tokens=MAX_NEW,
            do_sample=False,
        )
    seqs, _ = ours(
        config, params, ids, GenerationConfig(max_new_tokens=MAX_NEW, num_beams=1, length_penalty=length_penalty)
    )
    assert same_tokens(seqs, hf.numpy())


def test_no_repeat_ngram_greedy_matches_transformers(models):
    hf_model, config, params = models
    ids = inputs(seed=2)
    with torch.no_grad():
        hf = hf_model.generate(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(ids != 0),
            no_repeat_ngram_size=2,
            max_new_tokens=MAX_NEW,
            do_sample=False,
        )
    seqs, _ = ours(config, params, ids, GenerationConfig(max_new_tokens=MAX_NEW, no_repeat_ngram_size=2))
    assert same_tokens(seqs, hf.numpy())


def hf_beams(hf_model, ids, max_new_tokens=MAX_NEW, **kwargs):
    with torch.no_grad():
        return hf_model.generate(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(ids != 0),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            return_dict_in_generate=True,
            output_scores=True,
            **kwargs,
        )


# Rows are independent, so prompts from two draws can share a batch: these hold prompts where
# "never" changes the answer on each model (see test_the_models_exercise_the_rules).
NEVER_INPUTS = lambda: np.concatenate([inputs(seed=1), inputs(seed=3)])


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0])
def test_early_stopping_never_matches_transformers(models, length_penalty):
    hf_model, config, params = models
    ids = NEVER_INPUTS()
    hf = hf_beams(hf_model, ids, num_beams=2, length_penalty=length_penalty, early_stopping="never")
    seqs, scores = ours(
        config,
        params,
        ids,
        GenerationConfig(max_new_tokens=MAX_NEW, num_beams=2, length_penalty=length_penalty, early_stopping="never"),
    )
    assert same_tokens(seqs, hf.sequences.numpy())
    np.testing.assert_allclose(scores, hf.sequences_scores.numpy(), atol=1e-4)


def test_num_return_sequences_match_transformers(models):
    """All R hypotheses of every input, best first, with their scores (HF returns them row-major)."""
    hf_model, config, params = models
    ids = inputs(seed=4)
    hf = hf_beams(hf_model, ids, num_beams=4, num_return_sequences=3)
    out = search(config, params, ids, GenerationConfig(max_new_tokens=MAX_NEW, num_beams=4, num_return_sequences=3))
    assert out.sequences.shape[:2] == (len(ids), 3)
    assert same_tokens(np.asarray(out.sequences).reshape(len(ids) * 3, -1), hf.sequences.numpy())
    np.testing.assert_allclose(np.asarray(out.scores).reshape(-1), hf.sequences_scores.numpy(), atol=1e-4)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_min_new_tokens_matches_transformers(models, num_beams):
    hf_model, config, params = models
    ids = inputs(seed=4)
    hf = hf_beams(hf_model, ids, num_beams=num_beams, min_new_tokens=6)
    seqs, _ = ours(config, params, ids, GenerationConfig(max_new_tokens=MAX_NEW, num_beams=num_beams, min_new_tokens=6))
    assert same_tokens(seqs, hf.sequences.numpy())
    assert all((row[1:7] != 1).all() for row in seqs)  # no EOS among the first 6 new tokens


def test_the_models_exercise_the_rules(models):
    """The parity tests above can only fail if the settings they vary change transformers' answers
    on these models and prompts: check that each one does, somewhere."""
    hf_model = models[0]
    tokens = lambda ids, **kw: hf_beams(hf_model, ids, **kw).sequences.numpy()
    lengths = [
        row.tolist().index(1) if 1 in row.tolist() else MAX_NEW + 1 for row in tokens(inputs(seed=1), num_beams=1)
    ]
    assert min(lengths) <= MAX_NEW < max(lengths), lengths  # some greedy rows end, some run to the limit
    differs = lambda a, b: not same_tokens(a, b)
    beams = {
        (k, lp, es): tokens(inputs(seed=3), num_beams=k, length_penalty=lp, early_stopping=es)
        for k in (2, 4)
        for lp in (0.0, 1.0, 2.0)
        for es in (False, True)
    }
    assert any(
        differs(beams[k, 0.0, es], beams[k, lp, es]) for k in (2, 4) for lp in (1.0, 2.0) for es in (False, True)
    )
    assert any(differs(beams[k, lp, False], beams[k, lp, True]) for k in (2, 4) for lp in (0.0, 1.0, 2.0))
    never = NEVER_INPUTS()
    assert any(
        differs(
            tokens(never, num_beams=2, length_penalty=lp),
            tokens(never, num_beams=2, length_penalty=lp, early_stopping="never"),
        )
        for lp in (1.0, 2.0)
    )
    for k in (1, 3):
        assert differs(tokens(inputs(seed=4), num_beams=k), tokens(inputs(seed=4), num_beams=k, min_new_tokens=6))


@pytest.mark.parametrize("num_beams", [1, 4])
def test_long_searches_match_transformers(models, num_beams):
    """40 new tokens (at least 30): self-attention then reads the cache in several spans
    (t5.attention_spans), switching span as the prefix grows."""
    from chatcell_jax.model.t5 import attention_spans

    assert len(attention_spans(41)) > 1
    hf_model, config, params = models
    ids = inputs(seed=6)
    hf = hf_beams(hf_model, ids, num_beams=num_beams, max_new_tokens=40, min_new_tokens=30)
    seqs, scores = ours(
        config, params, ids, GenerationConfig(max_new_tokens=40, min_new_tokens=30, num_beams=num_beams)
    )
    assert same_tokens(seqs, hf.sequences.numpy())
    if num_beams > 1:
        np.testing.assert_allclose(scores, hf.sequences_scores.numpy(), atol=1e-4)
