"""Text in, text out: tokenise prompts, run the jitted searches over batches, decode the answers.

Shapes are static per compiled function, so prompts are padded to a length bucket (a multiple of
`length_bucket`) and every batch is padded to `batch_size` rows; each (bucket, settings) pair
compiles once. Rows never influence each other (sampling keys are per row, finished rows are
frozen), so answers do not depend on the batch size or on the other prompts in a batch.

`classify` gives constrained answers: each candidate label is scored as a whole target sequence
(teacher forcing, sum of token log-probabilities including EOS), and a softmax over the label set
turns the scores into probabilities. The answer is always one of the labels.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from chatcell_jax import decoding
from chatcell_jax.decoding import GenerationConfig
from chatcell_jax.errors import InputError
from chatcell_jax.model import t5
from chatcell_jax.model.config import T5Config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answer:
    text: str
    score: float
    token_ids: list[int]


@dataclass
class EncodedPrompts:
    ids: np.ndarray  # [n, S] int32, padded with pad id 0
    mask: np.ndarray  # [n, S] bool
    truncated: int  # prompts cut to the encoder limit


class Generator:
    """A model, its tokenizer and the compiled searches."""

    def __init__(self, config: T5Config, params: dict, tokenizer, *, max_source_length: int = 512,
                 batch_size: int = 16, length_bucket: int = 64, mesh: jax.sharding.Mesh | None = None):
        self.config, self.params, self.tokenizer = config, params, tokenizer
        self.max_source_length, self.batch_size, self.length_bucket = max_source_length, batch_size, length_bucket
        self.mesh = mesh
        self._compiled: dict = {}

    # --- tokenisation ----------------------------------------------------------------------------

    def encode_prompts(self, prompts: Sequence[str], truncate: bool = False) -> EncodedPrompts:
        """Token ids with EOS; prompts over the encoder limit are an error, or cut and counted."""
        rows = self.tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
        too_long = [i for i, r in enumerate(rows) if len(r) > self.max_source_length]
        if too_long and not truncate:
            first = too_long[0]
            raise InputError(
                f"{len(too_long)} prompt(s) exceed the encoder limit of {self.max_source_length} tokens (prompt "
                f"{first} has {len(rows[first])}); shorten them, raise --max-source-length, or pass --truncate")
        if too_long:
            log.warning("truncated %d prompt(s) to %d tokens", len(too_long), self.max_source_length)
            eos = self.config.eos_token_id
            rows = [r if len(r) <= self.max_source_length else r[: self.max_source_length - 1] + [eos] for r in rows]
        width = self._bucket(max(len(r) for r in rows))
        ids = np.zeros((len(rows), width), np.int32)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
        return EncodedPrompts(ids, ids != 0, len(too_long))

    def _bucket(self, length: int) -> int:
        return min(self.max_source_length, self.length_bucket * math.ceil(length / self.length_bucket))

    def decode_tokens(self, token_ids: np.ndarray) -> list[str]:
        """Generated ids (start token first) -> text, cut at the first EOS, special tokens skipped."""
        out = []
        for row in token_ids:
            row = row[1:].tolist()
            if self.config.eos_token_id in row:
                row = row[: row.index(self.config.eos_token_id)]
            out.append(self.tokenizer.decode(row, skip_special_tokens=True))
        return out

    # --- batches ---------------------------------------------------------------------------------

    def _batches(self, encoded: EncodedPrompts, progress: bool, what: str):
        n = len(encoded.ids)
        bar = tqdm(total=n, unit="prompts", desc=what, disable=not progress)
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            ids = np.zeros((self.batch_size, encoded.ids.shape[1]), np.int32)
            ids[: stop - start] = encoded.ids[start:stop]
            ids[stop - start :, 0] = self.config.eos_token_id  # padding rows: a bare EOS, never empty
            yield start, stop, ids, ids != 0
            bar.update(stop - start)
        bar.close()

    def _place(self, *arrays: np.ndarray):
        if self.mesh is None:
            return arrays
        from chatcell_jax.sharding import batch_sharding

        sharding = batch_sharding(self.mesh)
        return tuple(jax.device_put(a, sharding) for a in arrays)

    # --- free generation -------------------------------------------------------------------------

    def generate(self, prompts: Sequence[str], cfg: GenerationConfig, *, seed: int = 0, truncate: bool = False,
                 progress: bool = False) -> list[list[Answer]]:
        """`num_return_sequences` answers per prompt, best first."""
        if not prompts:
            return []
        encoded = self.encode_prompts(prompts, truncate)
        run = self._search_fn(cfg)
        answers: list[list[Answer]] = []
        for start, stop, ids, mask in self._batches(encoded, progress, "generating"):
            rows = jnp.arange(start, start + self.batch_size, dtype=jnp.int32)
            ids, mask = self._place(ids, mask)
            out = run(self.params, ids, mask, decoding.row_keys(seed, rows), jnp.float32(cfg.length_penalty))
            seqs, scores = np.asarray(out.sequences)[: stop - start], np.asarray(out.scores)[: stop - start]
            for row_seqs, row_scores in zip(seqs, scores):
                texts = self.decode_tokens(row_seqs)
                answers.append([Answer(t, float(s), r.tolist()) for t, s, r in zip(texts, row_scores, row_seqs)])
        return answers

    def _search_fn(self, cfg: GenerationConfig) -> Callable:
        static = replace(cfg, length_penalty=1.0)  # the penalty is a traced argument: no recompile
        key = ("search", static)
        if key not in self._compiled:
            self._compiled[key] = jax.jit(partial(_search, self.config, static))
        return self._compiled[key]

    # --- constrained answers ---------------------------------------------------------------------

    def classify(self, prompts: Sequence[str], labels: Sequence[str], *, truncate: bool = False,
                 progress: bool = False) -> np.ndarray:
        """Probabilities [n_prompts, n_labels] of each label as the whole answer."""
        if not labels:
            raise InputError("no labels to choose from; the model's manifest lists none for this task")
        encoded = self.encode_prompts(prompts, truncate)
        targets = self.tokenizer(list(labels), add_special_tokens=True)["input_ids"]
        width = max(len(t) for t in targets)
        label_ids = np.zeros((len(labels), width), np.int32)
        for i, t in enumerate(targets):
            label_ids[i, : len(t)] = t
        score = self._compiled.setdefault(("classify",), jax.jit(partial(_label_log_probs, self.config)))
        out = []
        for start, stop, ids, mask in self._batches(encoded, progress, "classifying"):
            ids, mask = self._place(ids, mask)
            out.append(np.asarray(score(self.params, ids, mask, jnp.asarray(label_ids)))[: stop - start])
        log_probs = np.concatenate(out)
        probs = np.exp(log_probs - log_probs.max(axis=1, keepdims=True))
        return probs / probs.sum(axis=1, keepdims=True)


def _search(model_cfg: T5Config, cfg: GenerationConfig, params: dict, ids: jax.Array, mask: jax.Array,
            keys: jax.Array, length_penalty: jax.Array | None = None) -> decoding.Generated:
    encoder_hidden = t5.encode(model_cfg, params, ids, mask)
    beams = 1 if cfg.do_sample or cfg.num_beams <= 1 else cfg.num_beams
    batch = ids.shape[0]
    cache = t5.init_cache(model_cfg, params, batch * beams, cfg.max_new_tokens + 1, encoder_hidden, mask)
    step_params = t5.split_decoder_layers(params)
    step = lambda tokens, cache, i: t5.decode_step(model_cfg, step_params, tokens, cache, i)
    return decoding.generate(step, cache, batch, cfg, keys, reorder_cache=t5.reorder_cache,
                             length_penalty=length_penalty)


def _label_log_probs(model_cfg: T5Config, params: dict, ids: jax.Array, mask: jax.Array,
                     label_ids: jax.Array) -> jax.Array:
    """Sum of log p(label tokens incl. EOS | prompt): [B, C]."""
    batch, n_labels = ids.shape[0], label_ids.shape[0]
    encoder_hidden = t5.encode(model_cfg, params, ids, mask)
    enc = jnp.repeat(encoder_hidden, n_labels, axis=0)
    enc_mask = jnp.repeat(mask, n_labels, axis=0)
    targets = jnp.tile(label_ids, (batch, 1))  # row b * C + c is label c for prompt b
    start = jnp.full((targets.shape[0], 1), model_cfg.decoder_start_token_id, targets.dtype)
    decoder_input = jnp.concatenate([start, targets[:, :-1]], axis=1)
    hidden = t5.decode(model_cfg, params, decoder_input, enc, enc_mask, decoder_input != -1)
    logits = t5.lm_logits(model_cfg, params, hidden)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    token_lp = jnp.take_along_axis(log_probs, targets[:, :, None], axis=-1)[:, :, 0]
    total = jnp.sum(jnp.where(targets != 0, token_lp, 0.0), axis=1)
    return total.reshape(batch, n_labels)
