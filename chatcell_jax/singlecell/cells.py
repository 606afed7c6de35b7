"""Cell sentences: expression profiles turned into gene symbols ordered by decreasing expression.

The recipe follows Cell2Sentence: normalise each cell to a target total, log10(1 + x), keep the
non-zero genes, order them by value (descending) with ties broken by a seeded random order, and
upper-case the symbols. Everything here works on one CSR row chunk at a time, so a file of any
size is processed in bounded memory.

Two choices worth knowing:
- The order is computed on the (filtered) counts, not on the normalised values. Per-cell scaling and
  log10(1+x) are strictly increasing, so the order is identical, and sorting the exact counts
  avoids float rounding creating or hiding ties.
- Ties are broken by a hash of (seed, global cell index, gene index) instead of a random generator
  per cell. It is a seeded uniform random order like Cell2Sentence's shuffle, but it does not depend
  on how the file is chunked, and it vectorises over a whole chunk (one sort per chunk). The hash is
  cut to 16 bits so it fits in a packed sort key; the rare equal hashes fall back to gene order.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata.utils import make_index_unique

from chatcell_jax.errors import InputError

TIE_BITS = 16  # bits of the seeded hash that break ties (then the gene index)
_ROW_BITS = 16  # the fast path packs at most 65,536 cells per chunk


@dataclass(frozen=True)
class RankedChunk:
    """Per-cell ranked genes of a chunk, CSR-like: cell i owns entries indptr[i]:indptr[i+1].

    `genes` are column indices ordered by decreasing expression; `values` the matching
    log10(1 + normalised expression).
    """

    indptr: np.ndarray
    genes: np.ndarray
    values: np.ndarray

    @property
    def n_cells(self) -> int:
        return len(self.indptr) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def ranks(self) -> np.ndarray:
        """0-based position of each entry within its cell."""
        return np.arange(len(self.genes)) - np.repeat(self.indptr[:-1], self.lengths())

    def cell_genes(self, i: int, top_k: int | None = None) -> np.ndarray:
        lo, hi = self.indptr[i], self.indptr[i + 1]
        return self.genes[lo : hi if top_k is None else min(hi, lo + top_k)]


def check_values(chunk: sp.csr_matrix, first_row: int, *, require_integers: bool) -> None:
    """Reject values that cannot be raw counts, naming the cell and what the matrix looks like."""
    data = chunk.data
    if not np.all(np.isfinite(data)):
        bad = int(np.flatnonzero(~np.isfinite(data))[0])
        raise InputError(
            f"the matrix holds NaN or infinite values (first at cell {_row_of(chunk, bad) + first_row}); "
            "clean the input or pick the raw counts with --layer/--raw"
        )
    if np.any(data < 0):
        bad = int(np.flatnonzero(data < 0)[0])
        raise InputError(
            f"the matrix holds negative values (first at cell {_row_of(chunk, bad) + first_row}): it "
            "looks scaled or centred, not counts; pass the raw counts with --layer NAME or --raw"
        )
    if require_integers and data.size and not np.all(data == np.round(data)):
        bad = int(np.flatnonzero(data != np.round(data))[0])
        kind = "log-transformed" if data.max() < 30 else "normalised (e.g. CPM/TPM)"
        raise InputError(
            f"the matrix holds non-integer values (e.g. {data[bad]:.4g} at cell {_row_of(chunk, bad) + first_row}) "
            f"and looks {kind}; pass raw counts with --layer NAME or --raw, or --allow-non-integer if the values "
            "are meant to be ranked as they are"
        )


def _row_of(chunk: sp.csr_matrix, entry: int) -> int:
    return int(np.searchsorted(chunk.indptr, entry, side="right") - 1)


def genes_per_cell(chunk: sp.csr_matrix) -> np.ndarray:
    return np.diff(chunk.indptr)


def restrict_genes(chunk: sp.csr_matrix, keep_genes: np.ndarray | None) -> sp.csr_matrix:
    """Zero out the columns of filtered genes (keeps the column indices stable)."""
    if keep_genes is None:
        return chunk
    chunk = chunk.copy()
    chunk.data[~keep_genes[chunk.indices]] = 0
    chunk.eliminate_zeros()
    return chunk


def tie_break_keys(seed: int, cells: np.ndarray, genes: np.ndarray) -> np.ndarray:
    """A seeded pseudo-random uint32 per (cell, gene), independent of chunking.

    A linear mix of the inputs through murmur3's 32-bit finaliser: enough to scramble neighbouring
    genes and cells, and 32-bit in-place arithmetic keeps it cheap on chunks of millions of entries.
    """
    u32 = np.uint32
    with np.errstate(over="ignore"):
        x = cells.astype(u32) * u32(0x9E3779B1)
        x += genes.astype(u32) * u32(0x85EBCA77)
        x += u32((seed * 0xC2B2AE3D + 0x27D4EB2F) & 0xFFFFFFFF)
        x ^= x >> u32(16)
        x *= u32(0x85EBCA6B)
        x ^= x >> u32(13)
        x *= u32(0xC2B2AE35)
        x ^= x >> u32(16)
    return x


def rank_chunk(counts: sp.csr_matrix, first_row: int, seed: int, target_total: float) -> RankedChunk:
    """Rank the expressed genes of every cell in a canonical CSR chunk (no explicit zeros).

    Canonical order within a cell: value descending, then a 16-bit seeded hash of (seed, cell,
    gene) ascending (the random tie-break), then gene index. Integer counts take a fast path that
    packs (row, value, hash, gene) into one uint64 and sorts the keys themselves (much faster than
    a four-key lexsort); anything else uses the lexsort. Both give the same order.
    """
    lengths = np.diff(counts.indptr)
    rows = np.repeat(np.arange(counts.shape[0]), lengths)
    ties = tie_break_keys(seed, rows + first_row, counts.indices) >> np.uint32(32 - TIE_BITS)
    packed = _packed_sort(counts, rows, ties)
    if packed is not None:
        genes, ordered = packed
    else:
        order = np.lexsort((counts.indices, ties, -counts.data, rows))
        genes, ordered = counts.indices[order], counts.data[order]
    totals = np.bincount(rows, weights=counts.data, minlength=counts.shape[0])
    scale = np.repeat(target_total / np.where(totals > 0, totals, 1.0), lengths)
    values = np.log10(1.0 + ordered * scale)
    return RankedChunk(indptr=counts.indptr.astype(np.int64), genes=genes.astype(np.int64), values=values)


def _packed_sort(counts: sp.csr_matrix, rows: np.ndarray, ties: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(genes, counts) in canonical order via one uint64 sort, or None when the keys do not fit."""
    gene_bits = max(1, int(counts.shape[1] - 1).bit_length())
    value_bits = 64 - _ROW_BITS - TIE_BITS - gene_bits
    data = counts.data
    if counts.shape[0] > 1 << _ROW_BITS or value_bits < 8 or not data.size:
        return None
    top = (1 << value_bits) - 1
    if data.max() > top or not np.all(data == np.floor(data)):
        return None
    u64 = np.uint64
    keys = u64(top) - data.astype(u64)  # value, descending
    keys <<= u64(TIE_BITS + gene_bits)
    keys |= rows.astype(u64) << u64(64 - _ROW_BITS)
    keys |= ties.astype(u64) << u64(gene_bits)
    keys |= counts.indices.astype(u64)
    keys.sort()
    genes = (keys & u64((1 << gene_bits) - 1)).astype(np.int64)
    ordered = (u64(top) - ((keys >> u64(TIE_BITS + gene_bits)) & u64(top))).astype(np.float64)
    return genes, ordered


def thin_counts(
    counts: sp.csr_matrix, first_row: int, seed: int, copy: int, min_fraction: float, rows: np.ndarray | None = None
) -> sp.csr_matrix:
    """Binomial thinning: the cells as if sequenced less deeply (a training augmentation).

    Each count of cell i is kept with probability f_i ~ U(min_fraction, 1), drawn with a generator
    seeded by (seed, copy, global cell index), so the result does not depend on chunking. Only `rows`
    (a boolean mask over the chunk; default all) are thinned, the others are emptied.
    """
    if counts.data.size and not np.all(counts.data == np.floor(counts.data)):
        raise InputError("thinning needs integer counts; augmentation cannot be used with non-integer values")
    data = np.zeros_like(counts.data)
    selected = np.ones(counts.shape[0], bool) if rows is None else rows
    for i in np.flatnonzero(selected):
        lo, hi = counts.indptr[i], counts.indptr[i + 1]
        rng = np.random.default_rng((seed, copy, first_row + int(i)))
        data[lo:hi] = rng.binomial(counts.data[lo:hi].astype(np.int64), rng.uniform(min_fraction, 1.0))
    thinned = sp.csr_matrix((data, counts.indices.copy(), counts.indptr.copy()), shape=counts.shape)
    thinned.eliminate_zeros()
    return thinned


def cell_sentences(
    counts: sp.spmatrix | np.ndarray,
    gene_symbols: np.ndarray,
    *,
    seed: int = 42,
    target_total: float = 1e4,
    top_k: int | None = None,
    first_row: int = 0,
) -> list[str]:
    """Sentences for an in-memory count matrix (cells x genes): a convenience over `rank_chunk`."""
    chunk = sp.csr_matrix(counts, dtype=np.float64)
    chunk.sum_duplicates()
    chunk.eliminate_zeros()
    ranked = rank_chunk(chunk, first_row, seed, target_total)
    symbols = normalise_symbols(np.asarray(gene_symbols))
    return [" ".join(symbols[ranked.cell_genes(i, top_k)]) for i in range(ranked.n_cells)]


def normalise_symbols(symbols: np.ndarray) -> np.ndarray:
    """Upper-case, whitespace-free symbols (whitespace would split one gene into two words)."""
    return np.array(["_".join(str(s).split()).upper() for s in symbols], dtype=object)


def make_unique(symbols: np.ndarray) -> tuple[np.ndarray, int]:
    """Repeats suffixed SYMBOL-1, SYMBOL-2 (anndata's `make_index_unique`); returns the number renamed."""
    with warnings.catch_warnings():  # anndata warns when a suffix could collide; it avoids the collision
        warnings.simplefilter("ignore", UserWarning)
        unique = make_index_unique(pd.Index(symbols, dtype=object)).to_numpy(dtype=object)
    return unique, int((unique != np.asarray(symbols, dtype=object)).sum())
