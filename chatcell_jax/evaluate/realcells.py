"""The real cells behind a prepared split, rebuilt from the source `.h5ad` by cell id.

Baselines need the cells' normalised expression (not only their top-N sentence), and the k-NN
reference needs the real sentences of *every* labelled cell of a split, whichever task its record
got. Both are rebuilt by the source's `SentenceRecipe` through the same `SentenceStream` as
`chatcell prepare` (same matrix, gene filter, target total and seeded ranking). The file is
streamed in chunks and only the wanted rows are kept, as sparse rows over the data set's gene
vocabulary: memory grows with the cells asked for, not with the file.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from chatcell_jax.errors import InputError
from chatcell_jax.singlecell.h5ad import H5adFile
from chatcell_jax.singlecell.manifest import Manifest
from chatcell_jax.singlecell.stream import SentenceStream

log = logging.getLogger(__name__)


@dataclass
class RealCells:
    """Cells in the order asked for: ids, normalised expression [n, len(genes)], top-N sentences."""

    cell_ids: list[str]
    expression: sp.csr_matrix
    sentences: list[str]
    genes: list[str]

    def rows(self, cell_ids: Sequence[str]) -> np.ndarray:
        """Row numbers of `cell_ids` (each must be present)."""
        index = {c: i for i, c in enumerate(self.cell_ids)}
        return np.array([index[c] for c in cell_ids], dtype=np.int64)


def load_real_cells(
    manifest: Manifest,
    cell_ids: Sequence[str],
    kind: str = "cells",
    *,
    path: str | Path | None = None,
    chunk_size: int = 2048,
) -> RealCells:
    """Rebuild the cells `cell_ids` of the `kind` source (or of `path`, when the file has moved)."""
    source = manifest.source(kind)
    recipe = manifest.recipe(kind)
    path = Path(path or source.path)
    if not path.exists():
        raise InputError(
            f"the source {path} of this data set is gone; expression baselines need it (pass "
            "--cells PATH if the file moved)"
        )
    genes = list(manifest.dataset_genes)
    wanted = list(dict.fromkeys(str(c) for c in cell_ids))
    with H5adFile(path, recipe.matrix) as h5:
        stream = SentenceStream(h5, recipe)
        file_rows = _file_rows(h5.cell_ids(), wanted, path)
        found = _stream(stream, file_rows, _column_map(stream.symbols, genes), len(genes), chunk_size)
    rows = [found[file_rows[c]] for c in wanted]
    matrix = sp.vstack([r[0] for r in rows], format="csr") if rows else sp.csr_matrix((0, len(genes)))
    log.info("rebuilt %d real cells from %s", matrix.shape[0], path.name)
    return RealCells(wanted, matrix, [r[1] for r in rows], genes)


def _column_map(symbols: np.ndarray, genes: Sequence[str]) -> np.ndarray:
    """Column in the data set's gene list of every file gene, -1 for genes the data set dropped."""
    index = {g: i for i, g in enumerate(genes)}
    return np.array([index.get(s, -1) for s in symbols], dtype=np.int64)


def _file_rows(file_ids: np.ndarray, wanted: list[str], path: Path) -> dict[str, int]:
    """Row in the file of every wanted cell id (the first row, if ids repeat)."""
    rows: dict[str, int] = {}
    for i, cell_id in enumerate(file_ids.tolist()):
        rows.setdefault(cell_id, i)
    missing = [c for c in wanted if c not in rows]
    if missing:
        raise InputError(
            f"{len(missing)} cell id(s) of the split (e.g. {missing[0]!r}) are not in {path}; "
            "is this the file the data set was prepared from?"
        )
    return {c: rows[c] for c in wanted}


def _stream(
    stream: SentenceStream, file_rows: dict[str, int], columns: np.ndarray, n_genes: int, chunk_size: int
) -> dict[int, tuple[sp.csr_matrix, str]]:
    """{file row: (normalised 1 x n_genes row, top-N sentence)} for the wanted rows."""
    found = {}
    wanted = np.unique(np.fromiter(file_rows.values(), dtype=np.int64, count=len(file_rows)))
    for part in stream.chunks(chunk_size, check=False, rows=wanted):
        ranked, start = part.ranked, part.start
        local = wanted[(wanted >= start) & (wanted < start + ranked.n_cells)] - start
        for i in local.tolist():
            lo, hi = ranked.indptr[i], ranked.indptr[i + 1]
            gene_cols = columns[ranked.genes[lo:hi]]
            ok = gene_cols >= 0
            row = sp.csr_matrix(
                (ranked.values[lo:hi][ok], (np.zeros(int(ok.sum()), np.int64), gene_cols[ok])), shape=(1, n_genes)
            )
            found[start + i] = (row, " ".join(stream.sentence(ranked, i)))
    return found
