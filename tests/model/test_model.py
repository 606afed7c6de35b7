"""The T5 on its own: configs and presets, incremental decoding, dropout, remat, dtypes,
vocabulary extension. HF parity lives in test_hf.py, sharding in test_sharding.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from chatcell_jax.errors import InputError
from chatcell_jax.model import PAD_LOGIT, T5, T5Config, count_params, extend_vocab, load_preset, preset_names
from chatcell_jax.model import t5 as t5_fn
from chatcell_jax.model.config import padded_vocab_size
from tests.helpers.model import VOCAB, batch, config, jitted
from tests.helpers.model import logits as _logits


@pytest.fixture(scope="module", params=["v1.0", "v1.1"])
def model(request):
    return T5(config(request.param), rngs=nnx.Rngs(0))


# --- config ------------------------------------------------------------------------------------


def test_presets_load_and_have_the_published_sizes():
    names = preset_names()
    for name in (
        "tiny",
        "t5-small",
        "t5-base",
        "t5-large",
        "t5-3b",
        "t5-11b",
        "t5-v1_1-small",
        "t5-v1_1-base",
        "t5-v1_1-large",
        "t5-v1_1-xl",
        "t5-v1_1-xxl",
    ):
        assert name in names
        load_preset(name)
    # Parameter counts transformers reports for the released checkpoints (num_parameters()).
    assert count_params(load_preset("t5-small")) == 60_506_624
    assert count_params(load_preset("t5-base")) == 222_903_552
    assert count_params(load_preset("t5-v1_1-small")) == 76_961_152
    assert count_params(load_preset("t5-v1_1-base")) == 247_577_856
    small = load_preset("t5-small", dtype="bfloat16")
    assert small.dtype == "bfloat16" and small.padded_vocab_size == 32128


def test_unknown_and_bad_config_keys_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="'d_modle'"):
        T5Config.from_dict({"d_modle": 3})
    with pytest.raises(InputError, match="feed_forward_proj"):
        T5Config(feed_forward_proj="swish")
    with pytest.raises(InputError, match="no-such-preset"):
        load_preset("no-such-preset")
    bad = tmp_path / "m.yaml"
    bad.write_text("d_model: 8\nnum_layer: 2\n")
    with pytest.raises(InputError, match="'num_layer'"):
        load_preset(bad)


def test_config_round_trips_and_hf_fields():
    cfg = config("v1.1", dtype="bfloat16", scan_layers=False)
    assert T5Config.from_dict(cfg.to_dict()) == cfg
    hf = cfg.to_hf_config()
    assert hf["tie_word_embeddings"] is False and hf["decoder_start_token_id"] == 0 and hf["vocab_size"] == VOCAB
    assert "dtype" not in hf and "vocab_multiple" not in hf
    back = T5Config.from_hf_config(hf)
    assert back == cfg.replace(dtype="float32", scan_layers=False).replace(scan_layers=True)
    with pytest.raises(InputError, match="bert"):
        T5Config.from_hf_config({"model_type": "bert", "architectures": ["BertModel"]})


def test_padded_vocab_size_divides_multiple_and_model_axis():
    assert padded_vocab_size(99) == 128
    assert padded_vocab_size(128) == 128
    assert padded_vocab_size(32101, 128, 3) == 32256  # lcm(128, 3) = 384
    assert padded_vocab_size(32101, 128, 3) % 384 == 0


# --- forward and decoding ------------------------------------------------------------------------


def test_padding_columns_never_win(model):
    logits = _logits(model)
    assert logits.dtype == np.float32 and logits.shape[-1] == 128
    assert np.all(logits[..., VOCAB:] == PAD_LOGIT)
    assert np.all(np.isfinite(logits[..., :VOCAB]))
    assert logits[..., :VOCAB].std() > 0.1  # not a degenerate model


def test_decode_step_reproduces_teacher_forcing(model):
    ids, mask, dec, _ = batch()
    cfg, params = model.config, model.params()
    full = _logits(model, (ids, mask, dec, None))
    enc = jitted("encode", cfg)(params, ids, mask)
    cache = jitted("init_cache", cfg)(params, ids.shape[0], dec.shape[1] + 3, enc, mask)  # longer than needed
    step = jitted("decode_step", cfg)
    steps = []
    for i in range(dec.shape[1]):
        logits, cache = step(params, jnp.asarray(dec[:, i]), cache, jnp.int32(i))
        steps.append(np.asarray(logits))
    np.testing.assert_allclose(np.stack(steps, 1)[..., :VOCAB], full[..., :VOCAB], atol=1e-5, rtol=0)
    # The per-layer split that generation passes in gives the same step.
    split = t5_fn.split_decoder_layers(params)
    assert isinstance(split["decoder"]["layers"], tuple) and len(split["decoder"]["layers"]) == cfg.num_decoder_layers
    first = jitted("init_cache", cfg)(params, ids.shape[0], dec.shape[1], enc, mask)
    np.testing.assert_array_equal(
        step(split, jnp.asarray(dec[:, 0]), first, jnp.int32(0))[0],
        step(params, jnp.asarray(dec[:, 0]), first, jnp.int32(0))[0],
    )


def test_decode_step_in_jit_while_loop_with_beams():
    """Decoding under lax.while_loop inside jit, params passed as a pytree, with the cache expanded
    to 2 rows per input (beams) and reordered the way beam search does."""
    m = T5(config("v1.1"), rngs=nnx.Rngs(1))
    cfg = m.config
    ids, mask, dec, _ = batch(b=2)
    t = dec.shape[1]
    full = _logits(m, (ids, mask, dec, None))

    @jax.jit
    def run(params, ids, mask, dec):
        cache = t5_fn.init_cache(cfg, params, 4, t, t5_fn.encode(cfg, params, ids, mask), mask)
        dec2 = jnp.repeat(dec, 2, axis=0)

        def body(carry):
            i, cache, out = carry
            logits, cache = t5_fn.decode_step(cfg, params, dec2[:, i], cache, i)
            cache = t5_fn.reorder_cache(cache, jnp.array([1, 0, 3, 2]))  # swap the two beams of each input
            return i + 1, cache, out.at[:, i].set(logits)

        out = jnp.zeros((4, t, cfg.padded_vocab_size), jnp.float32)
        return jax.lax.while_loop(lambda c: c[0] < t, body, (jnp.int32(0), cache, out))[2]

    out = np.asarray(run(m.params(), ids, mask, dec))
    np.testing.assert_allclose(out[::2, :, :VOCAB], full[..., :VOCAB], atol=1e-5, rtol=0)
    np.testing.assert_allclose(out[1::2, :, :VOCAB], full[..., :VOCAB], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["v1.0", "v1.1"])
def test_beam_reorders_follow_each_prefix_without_moving_the_cache(kind):
    """Random beam reorders, parents repeated and dropped, every step: each row's logits equal the
    teacher-forced forward of the prefix that row now holds (its path through the cache slots)."""
    cfg = config(kind)
    params = T5(cfg, rngs=nnx.Rngs(3)).params()
    ids, mask, _, _ = batch(b=2)
    beams, steps = 3, 9
    rng = np.random.default_rng(0)
    enc = jitted("encode", cfg)(params, ids, mask)
    cache = jitted("init_cache", cfg)(params, 2 * beams, steps, enc, mask)
    step, reorder = jitted("decode_step", cfg), jax.jit(t5_fn.reorder_cache)
    prefixes = np.zeros((2 * beams, 1), np.int32)  # decoder start token
    for i in range(steps):
        logits, cache = step(params, jnp.asarray(prefixes[:, -1]), cache, jnp.int32(i))
        full = _logits(T5Mock(cfg, params), (np.repeat(ids, beams, 0), np.repeat(mask, beams, 0), prefixes, None))
        np.testing.assert_allclose(np.asarray(logits)[:, :VOCAB], full[:, -1, :VOCAB], atol=5e-5, rtol=0)
        parents = rng.integers(0, beams, size=(2, beams)) + np.arange(2)[:, None] * beams  # within each input
        cache = reorder(cache, jnp.asarray(parents.reshape(-1), jnp.int32))
        prefixes = np.concatenate([prefixes[parents.reshape(-1)], rng.integers(2, VOCAB, (2 * beams, 1))], axis=1)
        prefixes = prefixes.astype(np.int32)


class T5Mock:
    """What `tests.helpers.model.logits` reads from a model: its config and parameters."""

    def __init__(self, config, params):
        self.config, self._params = config, params

    def params(self):
        return self._params


def test_greedy_generation_with_the_decoding_module():
    from chatcell_jax.serve.decoding import GenerationConfig, generate

    m = T5(config("v1.1"), rngs=nnx.Rngs(2))
    ids, mask, _, _ = batch(b=2)
    cfg = m.config
    params = m.params()
    gen = GenerationConfig(max_new_tokens=6, num_beams=2, eos_id=1)

    @jax.jit
    def beam(params, ids, mask):
        enc = t5_fn.encode(cfg, params, ids, mask)
        cache = t5_fn.init_cache(cfg, params, 4, 7, enc, mask)
        step = lambda tok, c, i: t5_fn.decode_step(cfg, params, tok, c, i)
        return generate(step, cache, 2, gen, reorder_cache=t5_fn.reorder_cache)

    out = beam(params, ids, mask)
    seqs = np.asarray(out.sequences)
    assert seqs.shape == (2, 1, 7) and np.all(seqs[:, :, 0] == 0) and np.all(seqs < VOCAB)
    # The best beam's score is its own length-normalised log-probability under the full forward.
    seq = seqs[:, 0]
    logp = jax.nn.log_softmax(_logits(m, (ids, mask, seq[:, :-1], None)), axis=-1)
    token_lp = np.take_along_axis(np.asarray(logp), seq[:, 1:, None], axis=-1)[..., 0]
    for row in range(2):
        n = int(np.argmax(seq[row, 1:] == 1)) + 1 if 1 in seq[row, 1:] else 6
        np.testing.assert_allclose(token_lp[row, :n].sum() / n, float(out.scores[row, 0]), atol=1e-4)


def test_unrolled_layers_and_remat_match_scan():
    model = T5(config("v1.1"), rngs=nnx.Rngs(0))
    ids, mask, dec, dec_mask = batch(b=2, s=6, t=5)
    params = model.params()

    def loss(cfg, p):
        return jnp.mean(t5_fn.forward(cfg, p, ids, mask, dec, dec_mask)[..., :VOCAB] ** 2)

    g_base = jax.jit(jax.grad(lambda p: loss(model.config, p)))(params)
    for overrides in ({"scan_layers": False, "remat": "full"},):
        cfg = model.config.replace(**overrides)
        g = jax.jit(jax.grad(lambda p: loss(cfg, p)))(params)
        for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_base)):
            np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-4)


def test_dropout_key_decides_the_masks():
    m = T5(config("v1.0", dropout_rate=0.3), rngs=nnx.Rngs(0))
    ids, mask, dec, _ = batch(b=2, s=5, t=4)
    b = (ids, mask, dec, None)
    clean = _logits(m, b)  # no key: no dropout
    a, again, other = (_logits(m, b, jax.random.key(k)) for k in (1, 1, 2))
    np.testing.assert_array_equal(a, again)
    assert np.abs(a - clean)[..., :VOCAB].max() > 1e-2 and np.abs(a - other)[..., :VOCAB].max() > 1e-2


def test_bfloat16_compute_keeps_fp32_params_and_logits():
    model = T5(config("v1.1"), rngs=nnx.Rngs(0))
    cfg = model.config.replace(dtype="bfloat16")
    m = T5.from_params(cfg, model.params())
    logits = _logits(m)
    assert logits.dtype == np.float32
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(m.params()))
    ref = _logits(model)[..., :VOCAB]
    err = np.abs(logits[..., :VOCAB] - ref).max()
    assert 0 < err < 0.1 * np.abs(ref).max()  # close, but really computed in bf16


def test_from_params_rejects_wrong_shapes(model):
    params = model.params()
    params["encoder"]["layers"]["q"] = params["encoder"]["layers"]["q"][:, :, :2]
    with pytest.raises(InputError, match="encoder/layers/q"):
        T5.from_params(model.config, params)


# --- vocabulary extension ----------------------------------------------------------------------------


@pytest.mark.parametrize("init", ["mean", "normal"])
def test_extend_vocab_keeps_old_rows_and_logits(model, init):
    cfg = model.config
    big = extend_vocab(model, 60, init=init, seed=3)
    assert big.config.vocab_size == VOCAB + 60 and big.config.padded_vocab_size == 256
    old, new = model.params(), big.params()
    np.testing.assert_array_equal(new["shared"][:VOCAB], old["shared"][:VOCAB])
    added = np.asarray(new["shared"][VOCAB : VOCAB + 60])
    if init == "mean":
        np.testing.assert_allclose(added, np.broadcast_to(np.mean(old["shared"][:VOCAB], 0), added.shape), atol=1e-6)
    else:
        assert 0.8 < added.std() < 1.2 and np.abs(added[0] - added[1]).max() > 0.1
    assert np.all(np.asarray(new["shared"][VOCAB + 60 :]) == 0)
    if not cfg.tie_word_embeddings:
        np.testing.assert_array_equal(new["lm_head"][:, :VOCAB], old["lm_head"][:, :VOCAB])
    np.testing.assert_array_equal(new["encoder"]["layers"]["q"], old["encoder"]["layers"]["q"])
    before, after = _logits(model), _logits(big)
    np.testing.assert_allclose(after[..., :VOCAB], before[..., :VOCAB], atol=1e-6, rtol=0)
    assert np.all(after[..., VOCAB + 60 :] == PAD_LOGIT) and np.all(after[..., VOCAB : VOCAB + 60] > PAD_LOGIT)
    # New tokens are usable as inputs.
    ids, mask, dec, dec_mask = batch()
    ids[0, 0] = VOCAB + 59
    assert np.all(np.isfinite(_logits(big, (ids, mask, dec, dec_mask))[..., :VOCAB]))


def test_extend_vocab_rejects_bad_arguments(model):
    with pytest.raises(InputError, match="init"):
        extend_vocab(model, 3, init="zeros")
    with pytest.raises(InputError, match="n_new"):
        extend_vocab(model, -1)
