"""Reading `.h5ad` files in bounded memory: a matrix streamed in row chunks, plus obs/var metadata.

We read the on-disk AnnData layout with h5py rather than `anndata.read_h5ad(backed="r")` because
backed mode streams only `X`: layers and `.raw` would be loaded whole. A CSR matrix is streamed by
slicing `data`/`indices` between two `indptr` entries; a dense matrix by slicing rows. CSC matrices
cannot be read by rows without touching every column, so they are loaded whole (with a warning).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from chatcell_jax.errors import InputError

log = logging.getLogger(__name__)

try:  # anndata >= 0.11
    from anndata.io import read_elem as _read_elem
except ImportError:  # anndata 0.10
    from anndata.experimental import read_elem as _read_elem


@dataclass(frozen=True)
class MatrixSpec:
    """Which matrix of the file holds the values: `X` (default), a named layer, or `.raw`."""

    layer: str | None = None
    use_raw: bool = False

    def __post_init__(self) -> None:
        if self.layer and self.use_raw:
            raise InputError("choose either a layer or .raw as the source of counts, not both")

    @property
    def path(self) -> str:
        if self.use_raw:
            return "raw/X"
        return f"layers/{self.layer}" if self.layer else "X"

    @property
    def var_path(self) -> str:
        return "raw/var" if self.use_raw else "var"


class H5adFile:
    """An open `.h5ad` file; use as a context manager."""

    def __init__(self, path: str | Path, spec: MatrixSpec = MatrixSpec()):
        self.path = Path(path)
        self.spec = spec
        _check_is_h5ad(self.path)
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as err:  # truncated or corrupted: h5py says which
            raise InputError(
                f"{self.path} cannot be opened as HDF5 ({err}); the file is damaged, copy it again"
            ) from None
        self._check_layout()
        self.n_cells, self.n_genes = self._matrix_shape()

    def __enter__(self) -> H5adFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def _check_layout(self) -> None:
        if "obs" not in self._file or "var" not in self._file:
            raise InputError(f"{self.path} is HDF5 but not an AnnData file (no obs/var groups)")
        if self.spec.path not in self._file:
            raise InputError(f"{self.path} has no {self.spec.path}; {self._available_matrices()}")

    def _available_matrices(self) -> str:
        found = ["X"] if "X" in self._file else []
        found += [f"layer {name!r}" for name in self._file.get("layers", {})]
        found += [".raw"] if "raw/X" in self._file else []
        return "available: " + (", ".join(found) or "none")

    def _matrix_shape(self) -> tuple[int, int]:
        node = self._file[self.spec.path]
        if isinstance(node, h5py.Dataset):
            if node.ndim != 2:
                raise InputError(f"{self.spec.path} in {self.path} is not a 2-D matrix")
            return int(node.shape[0]), int(node.shape[1])
        return tuple(int(v) for v in node.attrs["shape"])  # type: ignore[return-value]

    # --- metadata -------------------------------------------------------------------------------

    def obs(self) -> pd.DataFrame:
        return _read_dataframe(self._file, "obs", self.path)

    def var(self) -> pd.DataFrame:
        return _read_dataframe(self._file, self.spec.var_path, self.path)

    def cell_ids(self) -> np.ndarray:
        return self.obs().index.astype(str).to_numpy()

    def gene_symbols(self, column: str | None = None) -> np.ndarray:
        var = self.var()
        if column is None:
            symbols = var.index
        elif column in var.columns:
            symbols = var[column]
        else:
            raise InputError(f"no var column {column!r} in {self.path}; available: {sorted(var.columns)}")
        symbols = pd.Series(symbols).astype(str).to_numpy()
        if len(symbols) != self.n_genes:
            raise InputError(f"{self.spec.var_path} has {len(symbols)} genes but the matrix has {self.n_genes}")
        return symbols

    def obs_column(self, key: str) -> pd.Series:
        obs = self.obs()
        if key not in obs.columns:
            raise InputError(
                f"no obs column {key!r} in {self.path}; available obs columns: {sorted(map(str, obs.columns))}"
            )
        return obs[key]

    # --- values ---------------------------------------------------------------------------------

    def iter_chunks(self, chunk_size: int) -> Iterator[tuple[int, sp.csr_matrix]]:
        """Yield (first_row, CSR float64 chunk) covering all rows in order; a read that fails
        (a damaged file) is an InputError naming the file."""
        if chunk_size < 1:
            raise InputError(f"chunk size must be at least 1, got {chunk_size}")
        try:
            yield from self._chunks(chunk_size)
        except OSError as err:
            raise InputError(f"{self.path}: reading {self.spec.path} failed ({err}); the file is damaged") from None

    def _chunks(self, chunk_size: int) -> Iterator[tuple[int, sp.csr_matrix]]:
        node = self._file[self.spec.path]
        encoding = node.attrs.get("encoding-type", "array")
        if isinstance(node, h5py.Dataset):
            yield from self._dense_chunks(node, chunk_size)
        elif encoding == "csr_matrix":
            yield from self._csr_chunks(node, chunk_size)
        elif encoding == "csc_matrix":
            log.warning("%s is stored as CSC: it is read whole; store CSR to stream large files", self.spec.path)
            whole = sp.csc_matrix(
                (node["data"][:], node["indices"][:], node["indptr"][:]), shape=(self.n_cells, self.n_genes)
            ).tocsr()
            for start in range(0, self.n_cells, chunk_size):
                yield start, whole[start : start + chunk_size].astype(np.float64)
        else:
            raise InputError(f"{self.spec.path} has an unsupported encoding {encoding!r}")

    def _dense_chunks(self, node: h5py.Dataset, chunk_size: int) -> Iterator[tuple[int, sp.csr_matrix]]:
        for start in range(0, self.n_cells, chunk_size):
            yield start, sp.csr_matrix(np.asarray(node[start : start + chunk_size], dtype=np.float64))

    def _csr_chunks(self, node: h5py.Group, chunk_size: int) -> Iterator[tuple[int, sp.csr_matrix]]:
        indptr = node["indptr"][:].astype(np.int64)
        data, indices = node["data"], node["indices"]
        for start in range(0, self.n_cells, chunk_size):
            stop = min(start + chunk_size, self.n_cells)
            lo, hi = int(indptr[start]), int(indptr[stop])
            chunk = sp.csr_matrix(
                (data[lo:hi].astype(np.float64), indices[lo:hi].astype(np.int64), indptr[start : stop + 1] - lo),
                shape=(stop - start, self.n_genes),
            )
            chunk.sum_duplicates()  # canonical rows: sorted gene indices, no repeats
            yield start, chunk


def _check_is_h5ad(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path} does not exist")
    if path.is_dir() or not h5py.is_hdf5(path):
        raise InputError(f"{path} is not an .h5ad (HDF5) file; convert it with anndata first")


def _read_dataframe(file: h5py.File, key: str, path: Path) -> pd.DataFrame:
    try:
        frame = _read_elem(file[key])
    except Exception as err:  # old (pre-0.7) layouts: let anndata's own reader handle them
        log.debug("read_elem(%s) failed (%s); falling back to anndata.read_h5ad", key, err)
        import anndata

        adata = anndata.read_h5ad(path, backed="r")
        frame = {"obs": adata.obs, "var": adata.var, "raw/var": adata.raw.var if adata.raw else None}[key]
        adata.file.close()
    if not isinstance(frame, pd.DataFrame):
        raise InputError(f"{key} in {path} is not a data frame")
    return frame
