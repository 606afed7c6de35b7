"""Self-consistent pseudo-cells: the gene-constrained sample the model itself annotates as the type asked for.

Small models learn to annotate cells long before their pseudo-cell answers depend on the requested
type (the first-token distribution of a briefly trained model hardly moves with the type), so plain
sampling gives cells of every type that look alike. Bayes' rule with the model's own annotation
fixes much of that: draw K gene-constrained candidates for the request, score each with the model's
annotation of that candidate (`Generator.classify` of `prompts.annotation_prompt(candidate)` over
the manifest's cell types) and keep the one most probable to be of the requested type. The answer
is still exactly N distinct genes of the model's vocabulary; only which sample is kept changes.

Candidates per search: sampling draws K rows per request (request i, candidate j is prompt row
i * K + j, so its key does not depend on the batch size and K = 1 is plain constrained sampling);
beam search reranks its own hypotheses (min(K, num_beams) returned beams, at no extra cost); greedy
has a single answer, so nothing is reranked. With one candidate no annotation is computed.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from chatcell_jax.errors import InputError

# Nothing heavy at import time: the CLI's parsers read DEFAULT_CANDIDATES, and `chatcell --help`
# stays instant. The generation stack (JAX) is needed only by the callers that generate.
if TYPE_CHECKING:
    import numpy as np

    from chatcell_jax.serve.decoding import GenerationConfig
    from chatcell_jax.serve.generation import Answer, GeneConstraint, Generator

log = logging.getLogger(__name__)

DEFAULT_CANDIDATES = 16
MAX_CANDIDATES = 256


@dataclass(frozen=True)
class PseudoCell:
    """The answer kept for one request. `type_probability`: the model's own annotation probability
    of `cell_type` for that answer (None when there was one candidate and nothing was scored)."""

    answer: Answer
    cell_type: str
    type_probability: float | None
    candidates: int


def check_candidates(value: object) -> int:
    """`value` if it is a whole number from 1 to MAX_CANDIDATES, else an InputError naming the fix."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 1 <= value <= MAX_CANDIDATES:
        raise InputError(
            f"candidates must be a whole number from 1 to {MAX_CANDIDATES}, not {value!r}: e.g. "
            f'--candidates {DEFAULT_CANDIDATES} (web API: "candidates": {DEFAULT_CANDIDATES}); '
            "1 is plain constrained sampling"
        )
    return int(value)


def candidate_plan(cfg: GenerationConfig, candidates: int) -> tuple[GenerationConfig, int, int]:
    """(search settings, prompt rows per request, candidates per request) for `candidates` asked."""
    if candidates == 1:  # the search exactly as given: its best answer is the cell
        return cfg, 1, 1
    if cfg.do_sample:
        return cfg, candidates, candidates
    if cfg.num_beams > 1:
        returned = min(candidates, cfg.num_beams)
        return replace(cfg, num_return_sequences=returned), 1, returned
    log.info("greedy decoding has one answer per request: pseudo-cells are not reranked")
    return cfg, 1, 1


def pseudo_cells(
    generator: Generator,
    requests: Sequence[tuple[str, str]],
    constraint: GeneConstraint,
    cfg: GenerationConfig,
    *,
    candidates: int = DEFAULT_CANDIDATES,
    cell_types: Sequence[str] = (),
    seed: int = 0,
    truncate: bool = False,
    progress: bool = False,
) -> list[PseudoCell]:
    """One gene-constrained pseudo-cell per (prompt, requested cell type): of the request's
    candidates, the one the model annotates as the requested type with the highest probability
    (ties: the first candidate). `cell_types`: the labels the annotation chooses among (the
    manifest's); without them there is nothing to score with and each request gets one candidate."""
    candidates = check_candidates(candidates)
    if candidates > 1 and not cell_types:
        log.info("no cell-type labels to annotate candidates with: pseudo-cells are plain constrained samples")
        candidates = 1
    cell_types = list(cell_types)
    unknown = sorted({t for _, t in requests if t not in cell_types}) if candidates > 1 else []
    if unknown:
        raise InputError(
            f"unknown cell type(s) {', '.join(map(repr, unknown))}; the model knows: {', '.join(cell_types)}"
        )
    if not requests:
        return []
    cfg, rows, per_request = candidate_plan(cfg, candidates)
    answers = generator.generate(
        [p for p, _ in requests for _ in range(rows)],
        cfg,
        seed=seed,
        truncate=truncate,
        progress=progress,
        constraint=constraint,
    )
    pools = [
        [a for options in answers[i * rows : (i + 1) * rows] for a in options][:per_request]
        for i in range(len(requests))
    ]
    if per_request == 1:
        return [PseudoCell(pool[0], t, None, 1) for pool, (_, t) in zip(pools, requests)]
    probs = type_probabilities(
        generator,
        [a.text for pool in pools for a in pool],
        [t for _, t in requests for _ in range(per_request)],
        cell_types,
        truncate,
        progress,
    )
    return [
        _best(pool, t, probs[i * per_request : (i + 1) * per_request])
        for i, (pool, (_, t)) in enumerate(zip(pools, requests))
    ]


def type_probabilities(
    generator: Generator,
    sentences: Sequence[str],
    requested: Sequence[str],
    cell_types: Sequence[str],
    truncate: bool = False,
    progress: bool = False,
) -> np.ndarray:
    """[n] the model's annotation probability of each sentence's requested type (one batched
    `classify` over every sentence)."""
    from chatcell_jax.serve import prompts

    probs = generator.classify(
        [prompts.annotation_prompt(s) for s in sentences], cell_types, truncate=truncate, progress=progress
    )
    column = {t: i for i, t in enumerate(cell_types)}
    return probs[list(range(len(sentences))), [column[t] for t in requested]]


def _best(pool: Sequence[Answer], cell_type: str, probs: np.ndarray) -> PseudoCell:
    best = max(range(len(pool)), key=lambda i: probs[i])  # the first of equals, as argmax
    return PseudoCell(pool[best], cell_type, float(probs[best]), len(pool))
