"""Decoding under jit: beam search, greedy and sampling, each one `lax.while_loop` with static shapes.

The searches are written against a step function, not a model:

    step_fn(tokens [N], cache, step) -> (logits [N, V] float32, cache)

where N is batch x beams, `tokens` is the last token of every sequence, `step` the 0-based position
of that token in the decoder input, and `cache` any pytree (the model's key/value cache). The beam
search reorders the cache with `reorder_cache(cache, indices [N])` (default: take along axis 0 of
every leaf), so a model whose encoder keys/values are shared by the beams of one input keeps them
outside the reordered cache.

Beam search follows Hugging Face `generate()` (transformers 5.x `_beam_search`) token for token:
2K candidates per step, a candidate can finish only if it ranks in the top K, scores of finished
hypotheses are sum_logprobs / generated_length ** length_penalty, and the same early-stopping rule
(early_stopping True / False / "never"). The numpy reference in shared/reference was the guide.
Decoder sequences start with `start_id` at position 0; finished sequences are padded with EOS, as
Hugging Face does when pad_token_id is 0.

Constrained decoding (`distinct_tokens` > 0, see `exactly_distinct`): every search takes an
`allowed` [V] bool mask, a traced argument (one compiled search serves every token set), and emits
exactly `distinct_tokens` tokens of that set, none twice, then EOS. It is one more logits processor:
the loop carries a [rows, V] `used` mask (tokens outside the set count as used from the start; beam
search reorders it with the beams), EOS is banned until the n-th token and is then the only choice.
As with the other processors, greedy and sampling scores are log-probabilities under the masked,
renormalised distribution, and beam scores the model's log-probabilities of the tokens kept (Hugging
Face's beam search masks log_softmax output). Without a constraint nothing of it is traced, so free
decoding compiles to exactly the same computation as before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

from chatcell_jax.serve.cpu_kernels import argmax_first, categorical, chunk_size, top_k_barrier, top_k_stable

NEG = -1.0e9
StepFn = Callable[[jax.Array, Any, jax.Array], tuple[jax.Array, Any]]
ReorderFn = Callable[[Any, jax.Array], Any]


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings with Hugging Face's names and meanings."""

    max_new_tokens: int = 100
    min_new_tokens: int = 0
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | Literal["never"] = False
    num_return_sequences: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    no_repeat_ngram_size: int = 0
    eos_id: int = 1
    start_id: int = 0
    # Ours: > 0 makes a constrained search (build it with `exactly_distinct`): exactly this many
    # tokens of the search's `allowed` mask, none twice, then EOS.
    distinct_tokens: int = 0

    def __post_init__(self) -> None:
        if self.num_return_sequences > max(self.num_beams, 1) and not self.do_sample:
            raise ValueError("num_return_sequences cannot exceed num_beams")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        if self.distinct_tokens and (
            self.max_new_tokens != self.distinct_tokens + 1 or self.min_new_tokens > self.distinct_tokens
        ):
            raise ValueError(
                "a constrained search needs max_new_tokens = distinct_tokens + 1 and min_new_tokens "
                "at most distinct_tokens; build it with exactly_distinct()"
            )


# ChatCell's published generation settings (its README): sampling, top-k 50, top-p 0.95, no
# repeated bigrams.
CHATCELL_SAMPLING = GenerationConfig(do_sample=True, top_k=50, top_p=0.95, no_repeat_ngram_size=2)


def exactly_distinct(cfg: GenerationConfig, n: int) -> GenerationConfig:
    """`cfg` as a constrained search: exactly `n` distinct tokens of the `allowed` mask, then EOS.

    max_new_tokens becomes n + 1. min_new_tokens and no_repeat_ngram_size are dropped because the
    constraint already implies them, so the answers are the same without their cost: EOS comes
    exactly after n tokens, and with no token twice no n-gram can repeat (its first token would)."""
    if n < 1:
        raise ValueError("a constrained search needs at least one token")
    return replace(cfg, max_new_tokens=n + 1, min_new_tokens=0, no_repeat_ngram_size=0, distinct_tokens=n)


class Generated(NamedTuple):
    """sequences [B, R, 1 + max_new_tokens] (start token first, EOS-padded) and scores [B, R].

    A NamedTuple, so it is a pytree and can leave a jitted function."""

    sequences: jax.Array
    scores: jax.Array


def _take_rows(cache: Any, indices: jax.Array) -> Any:
    return jax.tree.map(lambda leaf: jnp.take(leaf, indices, axis=0), cache)


# --- logits processors (shared by all searches) --------------------------------------------------


def banned_ngram_mask(sequences: jax.Array, cur_len: jax.Array, n: int, vocab: int) -> jax.Array:
    """[N, V] True where appending the token would repeat an n-gram already in the sequence.

    `sequences` [N, L] holds valid tokens at positions < cur_len. An n-gram is banned when its first
    n-1 tokens equal the last n-1 tokens of the sequence (Hugging Face NoRepeatNGram semantics).
    """
    length = sequences.shape[1]
    starts = jnp.arange(length)
    window = starts[:, None] + jnp.arange(n - 1)[None, :]  # [L, n-1]
    prefixes = jnp.take(sequences, jnp.clip(window, 0, length - 1), axis=1)  # [N, L, n-1]
    suffix_pos = jnp.clip(cur_len - (n - 1) + jnp.arange(n - 1), 0, length - 1)
    suffix = jnp.take(sequences, suffix_pos, axis=1)  # [N, n-1]
    matches = jnp.all(prefixes == suffix[:, None, :], axis=-1)
    matches &= (starts + n - 1 < cur_len)[None, :] & (cur_len + 1 >= n)
    followers = jnp.take(sequences, jnp.clip(starts + n - 1, 0, length - 1), axis=1)  # [N, L]
    banned = jnp.zeros((sequences.shape[0], vocab), bool)
    rows = jnp.broadcast_to(jnp.arange(sequences.shape[0])[:, None], followers.shape)
    return banned.at[rows, followers].max(matches)


def _process(
    scores: jax.Array, sequences: jax.Array, cur_len: jax.Array, cfg: GenerationConfig, used: jax.Array | None = None
) -> jax.Array:
    """Processors that apply before any search decision: no-repeat n-grams, min_new_tokens, the
    distinct-token constraint."""
    banned = _banned(sequences, cur_len, cfg, scores.shape[-1], used)
    return scores if banned is None else jnp.where(banned, -jnp.inf, scores)


def _banned(
    sequences: jax.Array, cur_len: jax.Array, cfg: GenerationConfig, vocab: int, used: jax.Array | None = None
) -> jax.Array | None:
    """[N, V] True for the tokens the processors forbid now (None: no processor is on). They only
    ever forbid, whatever the scores, so a search may apply this mask to any part of the scores.
    `used` [N, V]: the constraint's mask (see `_initial_used`), given when cfg.distinct_tokens > 0."""
    banned = None
    if cfg.no_repeat_ngram_size > 0:
        banned = banned_ngram_mask(sequences, cur_len, cfg.no_repeat_ngram_size, vocab)
    if cfg.min_new_tokens > 0:
        too_short = cur_len - 1 < cfg.min_new_tokens  # tokens generated so far (after the start token)
        # Built from an iota, not scattered into an array: XLA then fuses it into whatever reads it
        # instead of writing an [N, V] mask (or a masked copy of the scores).
        eos = (jnp.arange(vocab) == cfg.eos_id)[None, :] & too_short
        banned = eos if banned is None else banned | eos
    if cfg.distinct_tokens:
        eos = (jnp.arange(vocab) == cfg.eos_id)[None, :]
        # Before the n-th token: neither EOS nor a used token; then EOS and nothing else.
        ban = jnp.where(cur_len - 1 < cfg.distinct_tokens, used | eos, ~eos)
        banned = ban if banned is None else banned | ban
    return banned


def _initial_used(cfg: GenerationConfig, allowed: jax.Array | None, rows: int) -> jax.Array | None:
    """The constraint's [rows, V] mask before the first token: every token outside `allowed` counts
    as used, so one mask says what a row may no longer emit. None for a free search."""
    if not cfg.distinct_tokens:
        if allowed is not None:
            raise ValueError("an allowed mask needs a constrained config (exactly_distinct)")
        return None
    if allowed is None:
        raise ValueError("a constrained search (distinct_tokens > 0) needs the allowed [V] mask")
    return jnp.broadcast_to(~jnp.asarray(allowed, bool)[None, :], (rows, allowed.shape[-1]))


def _mark_used(used: jax.Array | None, token: jax.Array) -> jax.Array | None:
    """`used` with each row's new token added (a compare against an iota, which XLA fuses)."""
    if used is None:
        return None
    return used | (jnp.arange(used.shape[-1])[None, :] == token[:, None])


def _warp(logits: jax.Array, cfg: GenerationConfig) -> jax.Array:
    """Temperature, then top-k, then top-p (Hugging Face's warper order).

    No full-vocabulary sort (XLA's CPU sort of [rows, 32k] costs ~0.5 s): top-k uses `lax.top_k`,
    and top-p finds the nucleus threshold from the top-k values, or by bisection without top-k.
    """
    if cfg.temperature != 1.0:
        logits = logits / cfg.temperature
    if cfg.top_k > 0:
        top_values = top_k_stable(logits, min(cfg.top_k, logits.shape[-1]))[0]
        logits = jnp.where(logits < top_values[:, -1:], -jnp.inf, logits)
        if cfg.top_p < 1.0:
            logits = jnp.where(logits < _nucleus_threshold_sorted(top_values, cfg.top_p), -jnp.inf, logits)
    elif cfg.top_p < 1.0:
        logits = jnp.where(logits < _nucleus_threshold_bisect(logits, cfg.top_p), -jnp.inf, logits)
    return logits


def _nucleus_threshold_sorted(sorted_desc: jax.Array, top_p: float) -> jax.Array:
    """[N, 1] smallest kept logit: keep tokens whose more-likely predecessors hold < top_p of the mass
    (Hugging Face's rule: the token that crosses top_p stays; at least one token stays)."""
    probs = jax.nn.softmax(sorted_desc, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    keep = jnp.maximum(jnp.sum(mass_before < top_p, axis=-1), 1)
    return jnp.take_along_axis(sorted_desc, keep[:, None] - 1, axis=-1)


def _nucleus_threshold_bisect(logits: jax.Array, top_p: float, iterations: int = 48) -> jax.Array:
    """[N, 1] the largest threshold t with mass(logits >= t) >= top_p, found by bisection."""
    probs = jax.nn.softmax(logits, axis=-1)
    finite = jnp.isfinite(logits)
    lo = jnp.min(jnp.where(finite, logits, jnp.inf), axis=-1, keepdims=True)
    hi = jnp.max(logits, axis=-1, keepdims=True)

    def body(_, bounds):
        lo, hi = bounds
        mid = (lo + hi) / 2
        enough = jnp.sum(jnp.where(logits >= mid, probs, 0.0), axis=-1, keepdims=True) >= top_p
        return jnp.where(enough, mid, lo), jnp.where(enough, hi, mid)

    lo, _ = jax.lax.fori_loop(0, iterations, body, (lo, hi))
    # lo always satisfies the mass condition; snap it to the smallest logit at or above it.
    return jnp.min(jnp.where(logits >= lo, logits, jnp.inf), axis=-1, keepdims=True)


# --- greedy and sampling -------------------------------------------------------------------------


class _SampleState(NamedTuple):
    """The greedy / sampling loop's carry."""

    cur_len: jax.Array  # positions written so far (the start token counts)
    seqs: jax.Array  # [rows, length] tokens, EOS after the end
    cache: Any
    done: jax.Array  # [rows] bool: EOS emitted
    scores: jax.Array  # [rows] sum of the chosen tokens' log-probabilities
    used: jax.Array | None  # [rows, V] bool of a constrained search, else None (nothing traced)


class BeamState(NamedTuple):
    """The beam search loop's carry; B inputs x K beams, sequences of `length` positions."""

    cur_len: jax.Array
    running: jax.Array  # [B, K, length] the live beams
    running_scores: jax.Array  # [B, K] their summed log-probabilities
    seqs: jax.Array  # [B, K, length] the best finished hypotheses so far
    beam_scores: jax.Array  # [B, K] their length-penalised scores (NEG where empty)
    finished: jax.Array  # [B, K] bool: that slot holds a finished hypothesis
    improvable: jax.Array  # [B] bool: a running beam can still beat the worst finished one
    keep_going: jax.Array  # bool: some input is still improvable
    cache: Any
    used: jax.Array | None = None  # [B x K, V] bool of a constrained search, reordered with the beams


def row_keys(seed: int, row_ids: jax.Array) -> jax.Array:
    """One PRNG key per input row, from the seed and the row's global index, so a row samples the
    same tokens whatever batch it lands in."""
    return jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(seed), i))(row_ids)


def sample_or_greedy(
    step_fn: StepFn,
    cache: Any,
    batch: int,
    cfg: GenerationConfig,
    keys: jax.Array | None = None,
    allowed: jax.Array | None = None,
) -> Generated:
    """Greedy (do_sample False) or ancestral sampling; one sequence per row of the batch.

    `keys` [batch] (see `row_keys`) drive sampling; each step folds the position into a row's key.
    Scores are the sum of log-probabilities of the chosen tokens under the processed distribution.
    `allowed` [V] bool: the token set of a constrained config (see `exactly_distinct`).
    """
    length = cfg.max_new_tokens + 1
    seqs = jnp.full((batch, length), cfg.eos_id, jnp.int32).at[:, 0].set(cfg.start_id)
    keys = row_keys(0, jnp.arange(batch)) if keys is None else keys

    def cond(s: _SampleState):
        return (s.cur_len < length) & ~jnp.all(s.done)

    def body(s: _SampleState) -> _SampleState:
        logits, cache = step_fn(s.seqs[:, s.cur_len - 1], s.cache, s.cur_len - 1)
        logits = _process(logits.astype(jnp.float32), s.seqs, s.cur_len, cfg, s.used)
        if cfg.do_sample:
            warped = _warp(logits, cfg)
            step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, s.cur_len)
            token = categorical(step_keys, warped, cfg.top_k)
            logprobs = jax.nn.log_softmax(warped, axis=-1)
        else:
            token = argmax_first(logits)
            logprobs = jax.nn.log_softmax(logits, axis=-1)
        token = jnp.where(s.done, cfg.eos_id, token).astype(jnp.int32)
        gained = jnp.take_along_axis(logprobs, token[:, None], axis=-1)[:, 0]
        return _SampleState(
            cur_len=s.cur_len + 1,
            seqs=s.seqs.at[:, s.cur_len].set(token),
            cache=cache,
            done=s.done | (token == cfg.eos_id),
            scores=s.scores + jnp.where(s.done, 0.0, gained),
            used=_mark_used(s.used, token),
        )

    # `used` is None for a free search: an empty pytree, so the loop is the unconstrained one.
    start = _SampleState(
        cur_len=jnp.int32(1),
        seqs=seqs,
        cache=cache,
        done=jnp.zeros(batch, bool),
        scores=jnp.zeros(batch, jnp.float32),
        used=_initial_used(cfg, allowed, batch),
    )
    final = jax.lax.while_loop(cond, body, start)
    return Generated(final.seqs[:, None, :], final.scores[:, None])


# --- beam search ---------------------------------------------------------------------------------


def beam_search(
    step_fn: StepFn,
    cache: Any,
    batch: int,
    cfg: GenerationConfig,
    reorder_cache: ReorderFn = _take_rows,
    length_penalty: jax.Array | float | None = None,
    allowed: jax.Array | None = None,
) -> Generated:
    """Hugging Face beam search. `cache` rows are batch-major: row b * K + k is beam k of input b.

    `length_penalty`, when given, overrides `cfg.length_penalty` and may be a traced scalar, so one
    compiled search serves every penalty. `allowed` [V] bool: the token set of a constrained config
    (see `exactly_distinct`)."""
    K, B = cfg.num_beams, batch
    length = cfg.max_new_tokens + 1
    lp = jnp.asarray(cfg.length_penalty if length_penalty is None else length_penalty, jnp.float32)
    running = jnp.full((B, K, length), cfg.eos_id, jnp.int32).at[:, :, 0].set(cfg.start_id)
    start = BeamState(
        cur_len=jnp.int32(1),
        running=running,
        running_scores=jnp.zeros((B, K), jnp.float32).at[:, 1:].set(NEG),
        seqs=running,
        beam_scores=jnp.full((B, K), NEG, jnp.float32),
        finished=jnp.zeros((B, K), bool),
        improvable=jnp.ones((B,), bool),
        keep_going=jnp.bool_(True),
        cache=cache,
        used=_initial_used(cfg, allowed, B * K),  # rows batch-major, like the cache's
    )

    def body(s: BeamState) -> BeamState:
        return _beam_step(s, step_fn, reorder_cache, cfg, B, K, length, lp)

    final = jax.lax.while_loop(lambda s: s.keep_going, body, start)
    R = cfg.num_return_sequences
    return Generated(final.seqs[:, :R], final.beam_scores[:, :R])


def _beam_step(
    s: BeamState, step_fn, reorder_cache, cfg: GenerationConfig, B: int, K: int, length: int, lp: jax.Array
) -> BeamState:
    cur_len = s.cur_len
    flat = s.running.reshape(B * K, length)
    logits, cache = step_fn(flat[:, cur_len - 1], s.cache, cur_len - 1)
    V = logits.shape[-1]
    used = s.used
    topk_lp, idx = _beam_candidates(logits.astype(jnp.float32), flat, cur_len, s.running_scores, cfg, 2 * K, used)
    beam_idx, token = idx // V, (idx % V).astype(jnp.int32)
    topk_seq = jnp.take_along_axis(s.running, beam_idx[:, :, None], axis=1)
    topk_seq = topk_seq.at[:, :, cur_len].set(token)
    done = (token == cfg.eos_id) | (cur_len + 1 >= length)

    # The next running beams: the best K candidates that did not finish.
    run_lp = topk_lp + done.astype(jnp.float32) * NEG
    run_scores, nxt = top_k_stable(run_lp, K)
    running = jnp.take_along_axis(topk_seq, nxt[:, :, None], axis=1)
    source_rows = (jnp.take_along_axis(beam_idx, nxt, axis=1) + jnp.arange(B)[:, None] * K).reshape(-1)
    cache = reorder_cache(cache, source_rows)
    if used is not None:  # each new beam inherits its source beam's mask, plus its new token
        used = _mark_used(jnp.take(used, source_rows, axis=0), jnp.take_along_axis(token, nxt, axis=1).reshape(-1))

    # Finished hypotheses: candidates in the top K that ended, scored with the length penalty.
    just_done = done & (jnp.arange(2 * K) < K)[None, :]
    scores = topk_lp / (cur_len.astype(jnp.float32) ** lp)
    full = jnp.all(s.finished, axis=-1, keepdims=True) & (cfg.early_stopping is True)
    scores = scores + (full | ~s.improvable[:, None] | ~just_done).astype(jnp.float32) * NEG
    merged_seq = jnp.concatenate([s.seqs, topk_seq], axis=1)
    merged_scores = jnp.concatenate([s.beam_scores, scores], axis=1)
    merged_fin = jnp.concatenate([s.finished, just_done], axis=1)
    beam_scores, order = top_k_stable(merged_scores, K)
    seqs = jnp.take_along_axis(merged_seq, order[:, :, None], axis=1)
    finished = jnp.take_along_axis(merged_fin, order, axis=1)

    # Can any batch item still improve? (Hugging Face's heuristic, including early_stopping="never".)
    new_len = cur_len + 1
    best_len = (new_len - 1).astype(jnp.float32)
    if cfg.early_stopping == "never":
        best_len = jnp.where(lp > 0.0, jnp.float32(length - 1), best_len)
    best_running = run_scores[:, 0] / best_len**lp
    worst_finished = jnp.where(finished, jnp.min(beam_scores, axis=1, keepdims=True), NEG)
    improvable = s.improvable & jnp.any(best_running[:, None] > worst_finished, axis=-1)
    stop_all_finished = jnp.all(finished) & (cfg.early_stopping is True)
    keep_going = jnp.any(improvable) & ~stop_all_finished & ~jnp.all(done)
    return BeamState(
        cur_len=new_len,
        running=running,
        running_scores=run_scores,
        seqs=seqs,
        beam_scores=beam_scores,
        finished=finished,
        improvable=improvable,
        keep_going=keep_going,
        cache=cache,
        used=used,
    )


def _beam_candidates(
    logits: jax.Array,
    sequences: jax.Array,
    cur_len: jax.Array,
    running_scores: jax.Array,
    cfg: GenerationConfig,
    k: int,
    used: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """The k best (beam, token) continuations of each input: the top k of
    running score + processed log_softmax(logits) over the [B, K x V] candidates, ties towards the
    lower index, with their flat indices.

    Without writing those B x K x V sums: within one beam the sum is a monotone function of the
    logit, so the chunk maxima of the logits give the chunk maxima of the sums (as in
    `cpu_kernels.top_k_chunked`), and only the candidates of the best chunks are scored. Each score is computed
    with the same operations, in the same order, as jax.nn.log_softmax and the plain route."""
    B, K = running_scores.shape
    V = logits.shape[-1]
    banned = _banned(sequences, cur_len, cfg, V, used)
    if banned is not None:
        banned = jnp.broadcast_to(banned, logits.shape)
    chunk = chunk_size(V, k)
    if not chunk:
        logprobs = jax.nn.log_softmax(logits, axis=-1)
        logprobs = logprobs if banned is None else jnp.where(banned, -jnp.inf, logprobs)
        return top_k_stable((logprobs + running_scores.reshape(-1, 1)).reshape(B, K * V), k)
    chunks = logits.reshape(B * K, V // chunk, chunk)
    # The barrier keeps XLA from merging the two maxima back into a second pass over the logits.
    maxima = jax.lax.optimization_barrier(jnp.max(chunks, axis=-1))
    shift = jnp.max(maxima, axis=-1, keepdims=True)  # the row maximum, which log_softmax subtracts
    lse = jnp.log(jnp.sum(jnp.exp(logits - shift), axis=-1, keepdims=True))
    maxima = _without_banned(maxima, chunks, banned, cfg)
    score = lambda x, shift, lse, running: ((x - shift) - lse) + running
    per_beam = lambda a: a.reshape(B, K, 1)
    maxima = score(maxima.reshape(B, K, -1), per_beam(shift), per_beam(lse), per_beam(running_scores))
    best = jnp.sort(top_k_barrier(maxima.reshape(B, -1), k)[1], axis=-1)  # [B, k] chunk ids, index order
    beam = best // (V // chunk)
    row = lambda a: jnp.take_along_axis(a.reshape(B, K), beam, axis=1)[:, :, None]
    pick = lambda a: jnp.take_along_axis(a.reshape(B, K * V // chunk, chunk), best[:, :, None], axis=1)
    candidates = pick(chunks) if banned is None else jnp.where(pick(banned), -jnp.inf, pick(chunks))
    values, pos = top_k_barrier(score(candidates, row(shift), row(lse), row(running_scores)).reshape(B, -1), k)
    return values, jnp.take_along_axis(best, pos // chunk, axis=1) * chunk + pos % chunk


def _without_banned(maxima: jax.Array, chunks: jax.Array, banned: jax.Array | None, cfg: GenerationConfig) -> jax.Array:
    """Chunk maxima [N, C] of the logits with the banned tokens left out. With min_new_tokens alone
    only EOS is ever banned, so only its chunk is recomputed: masking every chunk wrote a masked
    copy of the [N, V] logits each step (XLA's CPU reductions do not fuse the select). N-grams and
    the distinct-token constraint ban anywhere: every chunk is masked."""
    if banned is None:
        return maxima
    banned = banned.reshape(chunks.shape)
    if cfg.no_repeat_ngram_size > 0 or cfg.distinct_tokens:
        return jnp.max(jnp.where(banned, -jnp.inf, chunks), axis=-1)
    c = cfg.eos_id // chunks.shape[-1]
    return maxima.at[:, c].set(jnp.max(jnp.where(banned[:, c], -jnp.inf, chunks[:, c]), axis=-1))


def generate(
    step_fn: StepFn,
    cache: Any,
    batch: int,
    cfg: GenerationConfig,
    keys: jax.Array | None = None,
    reorder_cache: ReorderFn = _take_rows,
    length_penalty: jax.Array | float | None = None,
    allowed: jax.Array | None = None,
) -> Generated:
    """Dispatch on the settings: sampling, greedy (num_beams 1, as in Hugging Face) or beam search.
    `allowed` [V] bool: the token set of a constrained config (`exactly_distinct`), else None."""
    if cfg.do_sample or cfg.num_beams <= 1:
        return sample_or_greedy(step_fn, cache, batch, cfg, keys, allowed)
    return beam_search(step_fn, cache, batch, cfg, reorder_cache, length_penalty, allowed)
