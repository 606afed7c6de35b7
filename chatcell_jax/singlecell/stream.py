"""The one sentence stream: an `.h5ad`'s cells ranked exactly as a `SentenceRecipe` says.

`chatcell prepare` (training sentences), inference prompts for new cells and the evaluation's real
cells all read cells through `SentenceStream`, so one recipe gives one sentence everywhere: the same
matrix, gene symbols (normalised, made unique), gene filter, target total, seeded tie-break (by the
cell's row in the file) and length.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from chatcell_jax.errors import InputError
from chatcell_jax.singlecell import cells
from chatcell_jax.singlecell.h5ad import H5adFile
from chatcell_jax.singlecell.manifest import SentenceRecipe


@dataclass(frozen=True)
class RankedCells:
    """One chunk of cells: rows start..start+n of the file, their filtered counts and ranking."""

    start: int
    counts: sp.csr_matrix
    ranked: cells.RankedChunk


def gene_symbols(h5: H5adFile, gene_key: str | None) -> tuple[np.ndarray, int]:
    """The file's gene symbols as sentences spell them (normalised, made unique), and how many were
    renamed. An empty symbol is an InputError: it would be an empty word in every sentence."""
    symbols = cells.normalise_symbols(h5.gene_symbols(gene_key))
    empty = int(np.sum(symbols == ""))
    if empty:
        where = f"var[{gene_key!r}]" if gene_key else "the var index"
        raise InputError(
            f"{h5.path}: {empty} gene symbol(s) in {where} are empty; fill them in, or choose the column with "
            "symbols (--gene-key)"
        )
    return cells.make_unique(symbols)


class SentenceStream:
    """Cells of an open `.h5ad`, ranked by `recipe`, chunk by chunk."""

    def __init__(self, h5: H5adFile, recipe: SentenceRecipe):
        self.h5, self.recipe = h5, recipe
        self.symbols, self.renamed = gene_symbols(h5, recipe.gene_key)
        dropped = set(recipe.dropped_genes)
        self.keep_genes = np.array([s not in dropped for s in self.symbols]) if dropped else None

    def chunks(self, chunk_size: int, *, check: bool = True, rows: np.ndarray | None = None) -> Iterator[RankedCells]:
        """Ranked chunks; `check` rejects values the recipe does not allow, `rows` (sorted file rows)
        skips the ranking of chunks holding none of them."""
        for start, chunk in self.h5.iter_chunks(chunk_size):
            if rows is not None and not np.any((rows >= start) & (rows < start + chunk.shape[0])):
                continue
            chunk.eliminate_zeros()
            if check:
                cells.check_values(chunk, start, require_integers=self.recipe.require_integers)
            chunk = cells.restrict_genes(chunk, self.keep_genes)
            yield RankedCells(start, chunk, self.rank(chunk, start))

    def rank(self, counts: sp.csr_matrix, start: int, seed_offset: int = 0) -> cells.RankedChunk:
        """Rank filtered counts of rows start.. (seed_offset > 0: an augmented copy's own tie-break)."""
        return cells.rank_chunk(counts, start, self.recipe.seed + seed_offset, self.recipe.target_total)

    def sentence(self, ranked: cells.RankedChunk, i: int) -> list[str]:
        """The top-N gene symbols of cell i of a ranked chunk."""
        return self.symbols[ranked.cell_genes(i, self.recipe.top_k)].tolist()
