"""Gene rows of the embedding table started from the training cells (`gene_init: svd`).

A model trained from scratch sees each gene in a few hundred training sentences at most. Started at
random, two marker genes of the same cell type begin as unrelated vectors, and the model must learn
from those few sentences alone that they mean the same thing. `svd` starts every gene's row from a
truncated SVD of the training cells' gene matrix instead (latent semantic analysis on cell
sentences): one row per distinct training sentence, one column per gene, the entry 1 / sqrt(1 +
rank) where the gene occurs and 0 elsewhere, columns centred. Genes that appear in the same cells
start close together.

- Only the train split is read, so nothing of the held-out cells reaches the model.
- The rows are scaled to the root mean square of the rows they replace, so the table keeps the scale
  its model expects (a fresh preset's, or a pretrained model's grown rows).
- Genes that never occur in the sampled training sentences keep their rows.
- At most `MAX_SENTENCES` distinct sentences are used (a seeded sample), so the cost is bounded on
  a corpus of any size.
- With several processes, process 0's rows are broadcast, so every host starts from the same table
  even if its LAPACK rounds differently.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import LinearOperator, svds

from chatcell_jax.errors import InputError
from chatcell_jax.model.params import Params
from chatcell_jax.tokenizer import VOCAB_FILE

log = logging.getLogger(__name__)

MAX_SENTENCES = 50_000


def gene_token_ids(tokenizer_dir: str | Path) -> dict[str, int]:
    """Gene word -> token id: the tokenizer's whole words that are neither cell types nor drugs."""
    path = Path(tokenizer_dir) / VOCAB_FILE
    if not path.is_file():
        raise InputError(
            f"gene_init: svd needs the gene words of a `chatcell tokenizer` directory; {path} is missing "
            "(build the tokenizer with `chatcell tokenizer`, or set gene_init=model)"
        )
    record = json.loads(path.read_text(encoding="utf-8"))
    words = {**record.get("collisions", {}), **record.get("new_ids", {})}
    other = set(record.get("cell_types", [])) | set(record.get("drugs", []))
    return {word: int(i) for word, i in words.items() if word not in other}


def _sentences(records: Sequence[dict], genes: dict[str, int], seed: int) -> list[list[str]]:
    """Distinct gene sequences of the records (each record's source and target), a seeded sample
    of at most MAX_SENTENCES."""
    order = np.random.default_rng(seed).permutation(len(records))
    seen: set[tuple[str, ...]] = set()
    for index in order:
        record = records[int(index)]
        for text in (record.get("source", ""), record.get("target", "")):
            words = tuple(w for w in text.split() if w in genes)
            if len(words) > 1:
                seen.add(words)
        if len(seen) >= MAX_SENTENCES:
            break
    return sorted(seen)


def sentence_matrix(sentences: Sequence[Sequence[str]], columns: dict[str, int]) -> sp.csr_matrix:
    """[sentences, genes] with 1 / sqrt(1 + rank) where a gene occurs (rank 0 = first word)."""
    rows, cols, values = [], [], []
    for row, words in enumerate(sentences):
        for rank, word in enumerate(words):
            rows.append(row)
            cols.append(columns[word])
            values.append(1.0 / np.sqrt(1.0 + rank))
    shape = (len(sentences), len(columns))
    return sp.csr_matrix((values, (rows, cols)), shape=shape, dtype=np.float64)


def svd_rows(matrix: sp.csr_matrix, dim: int, seed: int) -> np.ndarray:
    """[genes, dim]: right singular vectors of the column-centred matrix times sqrt(singular value),
    largest first; columns beyond the matrix's rank stay 0."""
    n, g = matrix.shape
    k = min(dim, min(n, g) - 1)
    rows = np.zeros((g, dim), np.float64)
    if k < 1:
        return rows
    mean = np.asarray(matrix.mean(axis=0)).ravel()
    centred = LinearOperator(
        (n, g),
        matvec=lambda v: matrix @ np.ravel(v) - mean @ np.ravel(v),
        rmatvec=lambda u: matrix.T @ np.ravel(u) - mean * np.sum(u),
        dtype=np.float64,
    )
    start = np.random.default_rng(seed).standard_normal(min(n, g))
    _, values, vt = svds(centred, k=k, v0=start)
    order = np.argsort(values)[::-1]
    rows[:, :k] = vt[order].T * np.sqrt(values[order])
    return rows


def with_gene_rows(params: Params, records: Sequence[dict], tokenizer_dir: str | Path, seed: int) -> tuple[Params, int]:
    """(params with the gene rows of `shared` replaced, number of genes replaced)."""
    genes = gene_token_ids(tokenizer_dir)
    if not genes:
        raise InputError(f"gene_init: svd: the tokenizer in {tokenizer_dir} has no gene words")
    sentences = _sentences(records, genes, seed)
    columns = {word: j for j, word in enumerate(sorted(genes))}
    matrix = sentence_matrix(sentences, columns)
    present = np.flatnonzero(matrix.getnnz(axis=0) > 0)
    if present.size < 2:
        raise InputError("gene_init: svd: the training records hold fewer than 2 of the tokenizer's genes")
    table = params["shared"]
    rows = svd_rows(matrix, table.shape[1], seed)[present]
    ids = np.asarray([genes[w] for w in sorted(genes)], np.int64)[present]
    # A jitted reduction: the table may be sharded over devices of several processes.
    target_rms = float(jax.jit(lambda t: jnp.sqrt(jnp.mean(t[ids] ** 2)))(table))
    rows = _broadcast(_rescaled(rows, target_rms))
    shared = jax.jit(lambda t, r: t.at[ids].set(r.astype(t.dtype)), out_shardings=table.sharding)(table, rows)
    log.info("gene_init svd: %d gene rows from %d training sentences", len(ids), len(sentences))
    return {**params, "shared": shared}, int(len(ids))


def _rescaled(rows: np.ndarray, target_rms: float) -> np.ndarray:
    rms = float(np.sqrt(np.mean(rows**2)))
    return (rows * (target_rms / rms) if rms > 0 else rows).astype(np.float32)


def _broadcast(rows: np.ndarray) -> np.ndarray:
    if jax.process_count() == 1:
        return rows
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.broadcast_one_to_all(rows))
