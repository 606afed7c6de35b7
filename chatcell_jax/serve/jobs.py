"""Batch jobs over a trained model: prompts JSONL, annotation, drug response, generated cells.

Every job writes its output next to the target under a temporary name and renames it at the end,
so an interrupted job leaves no file that looks finished. Input files are never modified: results
for an `.h5ad` go into a copy, whose `obs` gains the new columns (the matrix is copied as bytes,
never loaded, so memory stays bounded).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Collection
from pathlib import Path

import numpy as np
import pandas as pd

from chatcell_jax.atomic import atomic_file, check_output
from chatcell_jax.errors import InputError
from chatcell_jax.serve import prompts
from chatcell_jax.serve.decoding import GenerationConfig
from chatcell_jax.serve.generation import GeneConstraint, Generator
from chatcell_jax.serve.pseudocells import DEFAULT_CANDIDATES, check_candidates, pseudo_cells
from chatcell_jax.singlecell.inverse import reconstruct_expression
from chatcell_jax.singlecell.manifest import Manifest, SentenceRecipe
from chatcell_jax.singlecell.records import read_jsonl

log = logging.getLogger(__name__)

MIN_KNOWN_SHARE = 0.5  # of the sentences' genes: below it, annotate / predict-drug warn


# --- prompts JSONL --------------------------------------------------------------------------------


def generate_jsonl(
    generator: Generator,
    input_path: Path,
    out_path: Path,
    cfg: GenerationConfig,
    *,
    seed: int = 0,
    truncate: bool = False,
    progress: bool = False,
) -> int:
    """Each input record (with `source`) plus `output` and `score`; returns the number of records."""
    records = list(read_jsonl(input_path, required=("source",)))
    answers = generator.generate([r["source"] for r in records], cfg, seed=seed, truncate=truncate, progress=progress)
    with atomic_file(out_path) as tmp, tmp.open("w", encoding="utf-8") as handle:
        for record, options in zip(records, answers):
            best = options[0]
            extra = (
                {"outputs": [a.text for a in options], "scores": [a.score for a in options]} if len(options) > 1 else {}
            )
            handle.write(
                json.dumps({**record, "output": best.text, "score": best.score, **extra}, ensure_ascii=False) + "\n"
            )
    return len(records)


# --- classification of the cells of an .h5ad ------------------------------------------------------


def classify_h5ad(
    generator: Generator,
    recipe: SentenceRecipe,
    input_path: Path,
    out_path: Path,
    *,
    labels: list[str],
    make_prompt,
    column: str,
    known_genes: Collection[str],
    truncate: bool = False,
    progress: bool = False,
    chunk_size: int = 2048,
) -> dict:
    """Constrained answers for every cell, written as obs[column] and obs[column + '_probability'].

    The model reads only genes it was trained on (`known_genes`): a file sharing none of them is
    refused before any work, and the summary reports the share of the sentences' genes it knows,
    with a warning below `MIN_KNOWN_SHARE`."""
    check_output(out_path, overwrite=True, inputs=(input_path,))  # the CLI made the same check first
    known_genes = set(known_genes)
    file_genes = prompts.check_gene_overlap(input_path, recipe, known_genes)
    ids, answers, probabilities, empty = [], [], [], 0
    sentence_genes = known_sentence_genes = 0
    for chunk in prompts.sentences_from_h5ad(input_path, recipe, chunk_size):
        ids += chunk.cell_ids
        present = [i for i, s in enumerate(chunk.sentences) if s]
        empty += len(chunk.sentences) - len(present)
        words = [w for i in present for w in chunk.sentences[i].split()]
        sentence_genes += len(words)
        known_sentence_genes += sum(w in known_genes for w in words)
        chunk_answers = [None] * len(chunk.sentences)
        chunk_probs = [np.nan] * len(chunk.sentences)
        if present:
            probs = generator.classify(
                [make_prompt(chunk.sentences[i]) for i in present], labels, truncate=truncate, progress=progress
            )
            for row, i in enumerate(present):
                best = int(np.argmax(probs[row]))
                chunk_answers[i], chunk_probs[i] = labels[best], float(probs[row, best])
        answers += chunk_answers
        probabilities += chunk_probs
    if empty:
        log.warning("%d cell(s) have no counts: no answer (left empty, probability NaN)", empty)
    _write_obs_columns(
        Path(input_path),
        Path(out_path),
        {column: pd.Categorical(answers, categories=labels), f"{column}_probability": np.asarray(probabilities)},
    )
    counts = pd.Series([a for a in answers if a]).value_counts().to_dict()
    share = 100.0 * known_sentence_genes / max(sentence_genes, 1)
    if share < 100 * MIN_KNOWN_SHARE:
        log.warning(
            "only %.0f%% of the genes in these cells' sentences are known to the model (%d of the file's %d "
            "genes are): the answers rest on the few it can read; check --gene-key and the species",
            share,
            file_genes.known,
            file_genes.total,
        )
    return {
        "cells": len(ids),
        "without_counts": empty,
        "genes_known": f"{file_genes.known} of {file_genes.total}",
        "sentence_genes_known_percent": round(share, 1),
        "answers": counts,
    }


def _write_obs_columns(input_path: Path, out_path: Path, columns: dict) -> None:
    """Copy the file, then rewrite only its obs group with the new columns."""
    import h5py

    try:
        from anndata.io import read_elem, write_elem
    except ImportError:  # anndata 0.10
        from anndata.experimental import read_elem, write_elem
    with atomic_file(out_path) as tmp:
        shutil.copyfile(input_path, tmp)
        with h5py.File(tmp, "r+") as handle:
            obs = read_elem(handle["obs"])
            for name, values in columns.items():
                obs[name] = values
            del handle["obs"]
            write_elem(handle, "obs", obs)


# --- generated cells -------------------------------------------------------------------------------


def generate_cells(
    generator: Generator,
    manifest: Manifest,
    out_path: Path,
    *,
    n_cells: int,
    cell_type: str | None,
    cfg: GenerationConfig,
    seed: int = 0,
    progress: bool = False,
    free: bool = False,
    candidates: int = DEFAULT_CANDIDATES,
) -> dict:
    """`n_cells` generated sentences and their reconstructed expression as an .h5ad.

    Gene-constrained by default: each cell is exactly N (the training top-N) distinct genes of the
    model's vocabulary, decoded with `cfg`'s search and sampling settings (its max_new_tokens is
    then N + 1). A cell of `cell_type` is the best of `candidates` samples by the model's own
    annotation (`pseudocells.pseudo_cells`), whose probability is obs['type_probability'] (NaN when
    nothing was scored). `free` decodes free text instead, whose words that are no genes are dropped."""
    import anndata as ad

    known = list(manifest.labels.cell_type)
    if cell_type is not None and known and cell_type not in known:
        raise InputError(f"unknown cell type {cell_type!r}; the model knows: {', '.join(known)}")
    if n_cells < 1:
        raise InputError("-n must be at least 1")
    candidates = check_candidates(candidates)
    fit = manifest.inverse_fit
    if fit is None:
        raise InputError(
            "the manifest has no inverse transform (data converted from ChatCell JSON?); "
            "expression cannot be reconstructed"
        )
    genes = list(manifest.dataset_genes)
    top_k = manifest.sentence_length
    prompt = prompts.generation_prompt(top_k, cell_type)
    constraint = None if free else GeneConstraint(generator.gene_vocabulary(manifest), top_k)
    sentences, candidates, extra_obs = _draw_sentences(
        generator, [prompt] * n_cells, cell_type, known, cfg, constraint, candidates, seed, progress
    )
    index = {g: i for i, g in enumerate(genes)}
    rows, unknown = [], []
    for sentence in sentences:
        vector, missing = reconstruct_expression(sentence, index, fit)
        rows.append(vector)
        unknown.append(missing)
    obs = pd.DataFrame(
        {"cell_type": [cell_type or "random"] * n_cells, "sentence": sentences, "unknown_words": unknown, **extra_obs},
        index=[f"generated_{i}" for i in range(n_cells)],
    )
    adata = ad.AnnData(X=np.vstack(rows), obs=obs, var=pd.DataFrame(index=genes))
    used = cfg if constraint is None else constraint.config(cfg)
    adata.uns["chatcell_generation"] = {
        "prompt": prompt,
        "seed": seed,
        "decoding": "free" if free else "genes",
        "candidates": candidates,
        "settings": json.dumps(used.__dict__, default=str),
    }
    with atomic_file(Path(out_path)) as tmp:
        adata.write_h5ad(tmp)
    total_unknown = int(np.sum(unknown))
    if total_unknown:
        log.warning("%d generated word(s) are not genes of the data set and were dropped", total_unknown)
    return {"cells": n_cells, "unknown_words": total_unknown}


def _draw_sentences(
    generator: Generator,
    prompts_: list[str],
    cell_type: str | None,
    known: list[str],
    cfg: GenerationConfig,
    constraint: GeneConstraint | None,
    candidates: int,
    seed: int,
    progress: bool,
) -> tuple[list[str], int, dict]:
    """(sentences, candidates used, extra obs columns): gene-constrained cells of a type are
    reranked by the model's own annotation, with its probability as obs['type_probability']."""
    if constraint is None or cell_type is None:
        answers = generator.generate(prompts_, cfg, seed=seed, progress=progress, constraint=constraint)
        return [a[0].text for a in answers], 1, {}
    cells = pseudo_cells(
        generator,
        [(p, cell_type) for p in prompts_],
        constraint,
        cfg,
        candidates=candidates,
        cell_types=known,
        seed=seed,
        progress=progress,
    )
    probabilities = [np.nan if c.type_probability is None else c.type_probability for c in cells]
    return [c.answer.text for c in cells], cells[0].candidates, {"type_probability": probabilities}
