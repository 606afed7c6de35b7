"""Instructions for inference: the same sentences and phrasings as training, for new cells or requests.

Training draws a phrasing per record; at inference one fixed phrasing per task is enough and keeps
results reproducible (`PHRASING`). Sentences for new cells are built by the training source's
`SentenceRecipe` through the same `SentenceStream` as `chatcell prepare`, streamed in chunks.
No QC filter applies here: every cell of the file gets an answer, and a cell with no counts gets an
empty sentence, which callers report (never silently drop).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chatcell_jax.errors import InputError
from chatcell_jax.singlecell import tasks as task_registry
from chatcell_jax.singlecell import templates
from chatcell_jax.singlecell.h5ad import H5adFile
from chatcell_jax.singlecell.manifest import Manifest, SentenceRecipe
from chatcell_jax.singlecell.stream import SentenceStream

PHRASING = {task: 0 for task in task_registry.NAMES}


@dataclass(frozen=True)
class SentenceChunk:
    cell_ids: list[str]
    sentences: list[str]  # "" for cells with no counts


def sentences_from_h5ad(path: str | Path, recipe: SentenceRecipe, chunk_size: int = 2048) -> Iterator[SentenceChunk]:
    """The sentence of every cell, built by the training data's `recipe`, chunk by chunk."""
    with H5adFile(path, recipe.matrix) as h5:
        stream = SentenceStream(h5, recipe)
        cell_ids = h5.cell_ids()
        for part in stream.chunks(chunk_size):
            n = part.counts.shape[0]
            yield SentenceChunk(
                [str(c) for c in cell_ids[part.start : part.start + n]],
                [" ".join(stream.sentence(part.ranked, i)) for i in range(n)],
            )


@dataclass(frozen=True)
class GeneOverlap:
    total: int  # genes of the file
    known: int  # of them, genes the model was trained on


def check_gene_overlap(path: str | Path, recipe: SentenceRecipe, known_genes: set[str]) -> GeneOverlap:
    """How many of the file's genes the model knows; none is an InputError (the model could not
    read a single cell of it)."""
    with H5adFile(path, recipe.matrix) as h5:
        symbols = SentenceStream(h5, recipe).symbols
    known = sum(str(s) in known_genes for s in symbols)
    if known == 0:
        example = ", ".join(sorted(known_genes)[:3])
        raise InputError(
            f"none of the {len(symbols)} genes of {path} is known to the model (it knows {len(known_genes)}, "
            f"e.g. {example}); give the column with gene symbols (--gene-key) or data of the training species"
        )
    return GeneOverlap(len(symbols), known)


def annotation_prompt(sentence: str) -> str:
    return templates.render("annotation", PHRASING["annotation"], n=len(sentence.split()), genes=sentence)


def drug_prompt(sentence: str, drug: str) -> str:
    return templates.render(
        "drug_sensitivity", PHRASING["drug_sensitivity"], n=len(sentence.split()), genes=sentence, drug=drug
    )


def generation_prompt(n_genes: int, cell_type: str | None = None) -> str:
    if cell_type is None:
        return templates.render("random_generation", PHRASING["random_generation"], n=n_genes)
    return templates.render(
        "pseudo_cell_generation", PHRASING["pseudo_cell_generation"], n=n_genes, cell_type=cell_type
    )


# --- plain-language questions --------------------------------------------------------------------

_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-/@]*")
DRUG_WORDS = ("sensitive", "resistant", "drug", "respond", "response")


@dataclass(frozen=True)
class QuestionAnalysis:
    """What a free-text question looks like to us: its task and the genes we did or did not know."""

    task: str
    genes: list[str]
    unknown_gene_like: list[str]
    cell_type: str | None = None
    drug: str | None = None


def analyse_question(text: str, manifest: Manifest, min_genes: int = 5) -> QuestionAnalysis:
    """Guess the task of a plain-language instruction from the manifest's vocabulary.

    A question carrying at least `min_genes` known genes is about a cell: drug response when it
    names a known drug or talks about sensitivity, annotation otherwise. Without genes, it asks for
    a cell: of a named cell type (pseudo-cell) or any cell (random generation). Upper-case words
    that look like gene symbols but are not in the vocabulary are returned so the caller can warn.
    """
    if not text.strip():
        raise InputError("the question is empty; ask e.g. 'Generate the top 100 genes of a CD14+ Monocyte'")
    vocabulary = set(manifest.dataset_genes) | set(manifest.genes)
    labels = manifest.labels
    without_labels = text
    for label in sorted([*labels.cell_type, *labels.drug], key=len, reverse=True):
        without_labels = re.sub(re.escape(label), " ", without_labels, flags=re.IGNORECASE)
    words = [w.strip(".,;:") for w in _WORD.findall(without_labels)]
    genes = [w for w in words if w.upper() in vocabulary and (w.isupper() or any(c.isdigit() for c in w))]
    unknown = [
        w for w in words if w.isupper() and len(w) > 1 and w.upper() not in vocabulary and any(c.isdigit() for c in w)
    ]
    lowered = text.lower()
    drugs = list(labels.drug)
    drug = next((d for d in drugs if d.lower() in lowered), None)
    if len(genes) >= min_genes:
        if drug or any(word in lowered for word in DRUG_WORDS):
            return QuestionAnalysis("drug_sensitivity", genes, unknown, drug=drug or (drugs[0] if drugs else None))
        return QuestionAnalysis("annotation", genes, unknown)
    cell_types = sorted(labels.cell_type, key=len, reverse=True)
    named = next((c for c in cell_types if c.lower() in lowered), None)
    task = "pseudo_cell_generation" if named else "random_generation"
    return QuestionAnalysis(task, genes, unknown, cell_type=named)


def top_k_in_question(text: str, default: int) -> int:
    """The N of 'top N genes' when the user says it; the training N otherwise."""
    match = re.search(r"\btop[\s-]*(\d{1,4})\b|\b(\d{1,4})\s+(?:most|highest|top|genes)", text, re.IGNORECASE)
    value = next((int(g) for g in (match.groups() if match else ()) if g), default)
    return int(np.clip(value, 1, 1000))
