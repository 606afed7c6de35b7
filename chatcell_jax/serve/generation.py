"""Text in, text out: tokenise prompts, run the jitted searches over batches, decode the answers.

Shapes are static per compiled function, so prompts are padded to a length bucket (a multiple of
`length_bucket`) and every batch is padded to `batch_size` rows; each (bucket, settings) pair
compiles once. Rows never influence each other (sampling keys are per row, finished rows are
frozen), so answers do not depend on the batch size or on the other prompts in a batch.

`classify` gives constrained answers: each candidate label is scored as a whole target sequence
(teacher forcing, sum of token log-probabilities including EOS), and a softmax over the label set
turns the scores into probabilities. The answer is always one of the labels.

`generate(..., constraint=GeneConstraint(...))` is the same idea for the generation tasks: the
search may emit only genes of the model's vocabulary that are one token each, every gene at most
once, and exactly N of them before EOS (`decoding.exactly_distinct`), so a generated cell is a
valid, duplicate-free list of N genes by construction. The gene set travels as a traced [V] mask:
one compiled search per N serves every gene set.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property, partial

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from chatcell_jax.errors import InputError
from chatcell_jax.model import t5
from chatcell_jax.model.config import T5Config
from chatcell_jax.serve import decoding
from chatcell_jax.serve.decoding import GenerationConfig
from chatcell_jax.singlecell.manifest import Manifest
from chatcell_jax.tokenizer import META

log = logging.getLogger(__name__)

# How to get free text instead, named in every error of gene-constrained generation.
FREE_HINT = 'or decode freely (--free; web API: "free": true)'


@dataclass(frozen=True)
class Answer:
    text: str
    score: float
    token_ids: list[int]


@dataclass(frozen=True)
class GeneVocabulary:
    """The genes a constrained search may emit, each with its one token id (sorted by id)."""

    genes: tuple[str, ...]
    token_ids: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.genes)

    def mask(self, width: int) -> np.ndarray:
        """[width] bool, True at the genes' ids (width: the model's padded logit width)."""
        allowed = np.zeros(width, bool)
        allowed[list(self.token_ids)] = True
        return allowed

    @cached_property
    def _gene_of(self) -> dict[int, str]:
        return dict(zip(self.token_ids, self.genes))

    def text(self, token_ids: Iterable[int]) -> str:
        """The space-joined genes of a constrained answer's ids (start and EOS ids are not genes)."""
        return " ".join(self._gene_of[i] for i in map(int, token_ids) if i in self._gene_of)


def single_token_genes(tokenizer, genes: Sequence[str], vocab_size: int) -> GeneVocabulary:
    """The genes of `genes` that are one real token of `tokenizer`: its piece "▁GENE" exists, the
    bare gene tokenises to exactly that id (so training saw the gene as that token), the id is a
    row of the model (< vocab_size) and no special token. Genes the tokenizer splits are left out
    (our tokenizer holds the genes of the training sentences, not every gene of the data set)."""
    genes = list(dict.fromkeys(genes))
    if not genes:
        raise InputError(
            f"no genes to constrain generation to: the manifest lists none; give the training data's "
            f"manifest (--manifest), {FREE_HINT}"
        )
    ids = tokenizer.convert_tokens_to_ids([META + g for g in genes])
    pieces = tokenizer(genes, add_special_tokens=False)["input_ids"]
    special = set(tokenizer.all_special_ids)
    found = sorted(
        (i, g)
        for g, i, p in zip(genes, ids, pieces)
        if i is not None and p == [i] and 0 <= i < vocab_size and i not in special
    )
    if not found:
        raise InputError(
            "gene-constrained generation needs one token per gene, and this tokenizer has none of the "
            f"{len(genes)} genes as a single token (e.g. an add_tokens tokenizer, as the published "
            f"ChatCell's); rebuild it with `chatcell tokenizer`, {FREE_HINT}"
        )
    if len(found) < len(genes):
        log.info(
            "gene-constrained generation: %d of %d genes are single tokens of the tokenizer; the rest "
            "cannot be generated",
            len(found),
            len(genes),
        )
    return GeneVocabulary(tuple(g for _, g in found), tuple(i for i, _ in found))


@dataclass(frozen=True)
class GeneConstraint:
    """Gene-constrained decoding: exactly `n_genes` distinct genes of `vocabulary`, then EOS."""

    vocabulary: GeneVocabulary
    n_genes: int

    def __post_init__(self) -> None:
        if self.n_genes < 1:
            raise InputError(f"gene-constrained generation needs at least 1 gene, not {self.n_genes}")
        if self.n_genes > len(self.vocabulary):
            raise InputError(
                f"{self.n_genes} distinct genes requested, but the model has only {len(self.vocabulary)} "
                f"genes as single tokens; ask for at most {len(self.vocabulary)}, {FREE_HINT}"
            )

    def config(self, cfg: GenerationConfig) -> GenerationConfig:
        """`cfg`'s search and sampling settings, constrained (max_new_tokens becomes N + 1)."""
        return decoding.exactly_distinct(cfg, self.n_genes)


@dataclass
class EncodedPrompts:
    ids: np.ndarray  # [n, S] int32, padded with pad id 0
    mask: np.ndarray  # [n, S] bool
    truncated: int  # prompts cut to the encoder limit


class Generator:
    """A model, its tokenizer and the compiled searches."""

    def __init__(
        self,
        config: T5Config,
        params: dict,
        tokenizer,
        *,
        max_source_length: int = 512,
        batch_size: int = 16,
        length_bucket: int = 64,
        mesh: jax.sharding.Mesh | None = None,
    ):
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
                f"{first} has {len(rows[first])}); shorten them, raise --max-source-length, or pass --truncate"
            )
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
        from chatcell_jax.model.sharding import batch_sharding

        sharding = batch_sharding(self.mesh)
        return tuple(jax.device_put(a, sharding) for a in arrays)

    def _replicate(self, array: np.ndarray) -> jax.Array:
        """An array every device needs whole (the allowed-token mask)."""
        if self.mesh is None:
            return jnp.asarray(array)
        return jax.device_put(array, jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec()))

    # --- generation ------------------------------------------------------------------------------

    def gene_vocabulary(self, manifest: Manifest) -> GeneVocabulary:
        """The manifest's genes that this model's tokenizer holds as single tokens."""
        return single_token_genes(self.tokenizer, manifest.dataset_genes, self.config.vocab_size)

    def generate(
        self,
        prompts: Sequence[str],
        cfg: GenerationConfig,
        *,
        seed: int = 0,
        truncate: bool = False,
        progress: bool = False,
        constraint: GeneConstraint | None = None,
    ) -> list[list[Answer]]:
        """`num_return_sequences` answers per prompt, best first. With `constraint`, every answer is
        exactly N distinct genes of its vocabulary (space-joined), decoded with `cfg`'s search and
        sampling settings; without, free text."""
        if not prompts:
            return []
        encoded = self.encode_prompts(prompts, truncate)
        extra: tuple = ()
        if constraint is not None:
            cfg = constraint.config(cfg)
            extra = (self._replicate(constraint.vocabulary.mask(self.params["shared"].shape[0])),)
        run = self._search_fn(cfg)
        answers: list[list[Answer]] = []
        for start, stop, ids, mask in self._batches(encoded, progress, "generating"):
            rows = jnp.arange(start, start + self.batch_size, dtype=jnp.int32)
            ids, mask = self._place(ids, mask)
            out = run(self.params, ids, mask, decoding.row_keys(seed, rows), jnp.float32(cfg.length_penalty), *extra)
            seqs, scores = np.asarray(out.sequences)[: stop - start], np.asarray(out.scores)[: stop - start]
            for row_seqs, row_scores in zip(seqs, scores):
                texts = (
                    self.decode_tokens(row_seqs)
                    if constraint is None
                    else [constraint.vocabulary.text(r) for r in row_seqs]
                )
                answers.append([Answer(t, float(s), r.tolist()) for t, s, r in zip(texts, row_scores, row_seqs)])
        return answers

    def _search_fn(self, cfg: GenerationConfig) -> Callable:
        static = replace(cfg, length_penalty=1.0)  # the penalty is a traced argument: no recompile
        key = ("search", static)
        if key not in self._compiled:
            self._compiled[key] = jax.jit(partial(_search, self.config, static))
        return self._compiled[key]

    # --- constrained answers ---------------------------------------------------------------------

    def classify(
        self, prompts: Sequence[str], labels: Sequence[str], *, truncate: bool = False, progress: bool = False
    ) -> np.ndarray:
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


def _search(
    model_cfg: T5Config,
    cfg: GenerationConfig,
    params: dict,
    ids: jax.Array,
    mask: jax.Array,
    keys: jax.Array,
    length_penalty: jax.Array | None = None,
    allowed: jax.Array | None = None,
) -> decoding.Generated:
    encoder_hidden = t5.encode(model_cfg, params, ids, mask)
    beams = 1 if cfg.do_sample or cfg.num_beams <= 1 else cfg.num_beams
    batch = ids.shape[0]
    cache = t5.init_cache(model_cfg, params, batch * beams, cfg.max_new_tokens + 1, encoder_hidden, mask)
    step_params = t5.split_decoder_layers(params)
    step = lambda tokens, cache, i: t5.decode_step(model_cfg, step_params, tokens, cache, i)
    return decoding.generate(
        step, cache, batch, cfg, keys, reorder_cache=t5.reorder_cache, length_penalty=length_penalty, allowed=allowed
    )


def _label_log_probs(
    model_cfg: T5Config, params: dict, ids: jax.Array, mask: jax.Array, label_ids: jax.Array
) -> jax.Array:
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
