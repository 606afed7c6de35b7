"""Decoding loops on toy step functions (the HF parity tests with real T5 weights are in test_generate_hf)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chatcell_jax.serve.decoding import (
    GenerationConfig,
    _warp,
    banned_ngram_mask,
    beam_search,
    generate,
    row_keys,
    sample_or_greedy,
)

V = 11


def markov_step(seed: int, batch_bias: bool = True):
    rng = np.random.default_rng(seed)
    table = jnp.asarray(rng.normal(0, 2.0, (V, V)).astype(np.float32))
    position = jnp.asarray(rng.normal(0, 0.5, (40, V)).astype(np.float32))

    def step(tokens, cache, step):
        return table[tokens] + position[step], cache

    return step, np.asarray(table), np.asarray(position)


def test_greedy_follows_the_argmax_chain():
    step, table, position = markov_step(0)
    cfg = GenerationConfig(max_new_tokens=8, eos_id=1, start_id=0)
    out = jax.jit(lambda: sample_or_greedy(step, None, 2, cfg))()
    expected, token = [0], 0
    for t in range(8):
        token = int(np.argmax(table[token] + position[t]))
        expected.append(token)
        if token == 1:
            break
    got = np.asarray(out.sequences[0, 0, : len(expected)]).tolist()
    assert got == expected
    assert np.all(np.asarray(out.sequences[0, 0, len(expected) :]) == 1)  # EOS-padded after the end


def test_num_beams_1_is_greedy():
    step, *_ = markov_step(1)
    greedy = generate(step, None, 2, GenerationConfig(max_new_tokens=6))
    beams1 = generate(step, None, 2, GenerationConfig(max_new_tokens=6, num_beams=1))
    np.testing.assert_array_equal(greedy.sequences, beams1.sequences)


def brute_force_banned(seq: list[int], n: int) -> set[int]:
    if len(seq) + 1 < n:
        return set()
    prefix = tuple(seq[len(seq) - n + 1 :])
    return {seq[i + n - 1] for i in range(len(seq) - n + 1) if tuple(seq[i : i + n - 1]) == prefix}


@pytest.mark.parametrize("n", [2, 3])
def test_no_repeat_ngram_mask_matches_brute_force(n):
    rng = np.random.default_rng(n)
    seqs = rng.integers(0, 4, size=(16, 12))
    for cur_len in range(1, 12):
        mask = np.asarray(banned_ngram_mask(jnp.asarray(seqs), jnp.int32(cur_len), n, 4))
        for row in range(16):
            assert set(np.flatnonzero(mask[row])) == brute_force_banned(seqs[row, :cur_len].tolist(), n)


def test_sampling_is_reproducible_and_respects_top_k():
    step, table, position = markov_step(2)
    cfg = GenerationConfig(max_new_tokens=10, do_sample=True, top_k=2)
    run = jax.jit(lambda seed: sample_or_greedy(step, None, 64, cfg, row_keys(seed, jnp.arange(64))))
    a, b = run(3), run(3)
    np.testing.assert_array_equal(a.sequences, b.sequences)
    assert not np.array_equal(a.sequences, run(4).sequences)
    # a row samples the same tokens in any batch: rows 10..19 alone equal rows 10..19 of the 64
    part = sample_or_greedy(step, None, 10, cfg, row_keys(3, jnp.arange(10, 20)))
    np.testing.assert_array_equal(part.sequences, a.sequences[10:20])
    seqs = np.asarray(a.sequences[:, 0])
    for row in seqs:
        for t in range(1, 11):
            if row[t - 1] == 1:
                break
            allowed = np.argsort(-(table[row[t - 1]] + position[t - 1]))[:2]
            assert row[t] in allowed


def test_top_p_keeps_only_the_nucleus():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
    step = lambda tokens, cache, step: (jnp.broadcast_to(logits, (tokens.shape[0], 4)), cache)
    cfg = GenerationConfig(max_new_tokens=1, do_sample=True, top_p=0.7, eos_id=3)
    out = sample_or_greedy(step, None, 512, cfg, row_keys(0, jnp.arange(512)))
    drawn = np.asarray(out.sequences[:, 0, 1])
    assert set(drawn) == {0, 1}  # 0.5 + 0.3 reach 0.7; tokens 2 and 3 are outside the nucleus
    assert 0.5 < np.mean(drawn == 0) < 0.75


def test_min_new_tokens_blocks_early_eos():
    always_eos = lambda tokens, cache, step: (jnp.zeros((tokens.shape[0], 5)).at[:, 1].set(10.0), cache)
    out = sample_or_greedy(always_eos, None, 1, GenerationConfig(max_new_tokens=6, min_new_tokens=3))
    seq = np.asarray(out.sequences[0, 0])
    assert 1 not in seq[1:4] and seq[4] == 1


def test_beam_search_returns_sorted_distinct_hypotheses():
    step, *_ = markov_step(4)
    cfg = GenerationConfig(max_new_tokens=7, num_beams=4, num_return_sequences=3)
    out = jax.jit(lambda: beam_search(step, jnp.zeros((2 * 4,)), 2, cfg))()
    scores = np.asarray(out.scores)
    assert np.all(np.diff(scores, axis=1) <= 0)
    for b in range(2):
        rows = {tuple(r) for r in np.asarray(out.sequences[b])}
        assert len(rows) == 3


def test_beam_search_beats_or_ties_greedy_without_length_penalty():
    for seed in range(5):
        step, *_ = markov_step(seed)
        greedy = sample_or_greedy(step, None, 1, GenerationConfig(max_new_tokens=6))
        beam = beam_search(
            step, jnp.zeros((8,)), 1, GenerationConfig(max_new_tokens=6, num_beams=8, length_penalty=0.0)
        )
        assert float(beam.scores[0, 0]) >= float(greedy.scores[0, 0]) - 1e-5


@pytest.mark.parametrize("top_k", [0, 3])
def test_top_p_threshold_matches_the_sorted_rule(top_k):
    rng = np.random.default_rng(7)
    logits = jnp.asarray(rng.normal(0, 2, size=(32, 50)).astype(np.float32))
    for top_p in (0.3, 0.8, 0.95):
        warped = np.asarray(_warp(logits, GenerationConfig(top_p=top_p, top_k=top_k)))
        for row, kept in zip(np.asarray(logits), np.isfinite(warped)):
            order = np.argsort(-row)[: top_k or None]
            probs = np.exp(row[order] - row[order].max())
            probs /= probs.sum()
            before = np.cumsum(probs) - probs
            expected = set(order[before < top_p]) or {order[0]}
            assert set(np.flatnonzero(kept)) == expected


# --- the chunked beam candidates rank exactly what the plain route ranks --------------------------


@pytest.mark.parametrize("vocab,processors", [(4096, False), (4096, True), (999, True)])
def test_beam_candidates_match_log_softmax_plus_scores_then_top_k(vocab, processors):
    """The chunked candidate search scores exactly the candidates the plain route ranks first
    (ties included; 999 columns have no chunk width and take the plain route)."""
    from chatcell_jax.serve.cpu_kernels import top_k_barrier
    from chatcell_jax.serve.decoding import _beam_candidates, _process

    B, K, k = 3, 4, 8
    rng = np.random.default_rng(vocab + processors)
    logits = jnp.asarray(np.round(rng.normal(size=(B * K, vocab)) * 4) / 4, jnp.float32)  # many ties
    running = jnp.asarray(np.round(rng.normal(size=(B, K))), jnp.float32)
    sequences = jnp.asarray(rng.integers(2, 6, size=(B * K, 12)), jnp.int32)  # repeats: banned bigrams
    cfg = GenerationConfig(
        max_new_tokens=11, num_beams=K, min_new_tokens=5 * processors, no_repeat_ngram_size=2 * processors
    )
    cur_len = jnp.int32(6)
    plain = _process(jax.nn.log_softmax(logits, axis=-1), sequences, cur_len, cfg) + running.reshape(-1, 1)
    want = top_k_barrier(plain.reshape(B, -1), k)
    got = jax.jit(_beam_candidates, static_argnums=(4, 5))(logits, sequences, cur_len, running, cfg, k)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    if processors:
        assert np.isinf(np.asarray(plain)).any()  # the processors did ban something
