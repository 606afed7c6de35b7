"""Small real .h5ad files for tests, written with anndata."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp


def write_h5ad(
    path: Path, counts, genes=None, obs: dict | None = None, layers: dict | None = None, raw=None, sparse: bool = True
) -> Path:
    counts = np.asarray(counts, dtype=np.float32)
    n_cells, n_genes = counts.shape
    genes = genes if genes is not None else [f"Gene{i}" for i in range(n_genes)]
    frame = pd.DataFrame(obs or {}, index=[f"cell{i}" for i in range(n_cells)])
    adata = ad.AnnData(
        X=sp.csr_matrix(counts) if sparse else counts, obs=frame, var=pd.DataFrame(index=pd.Index(genes, dtype=str))
    )
    for name, values in (layers or {}).items():
        adata.layers[name] = sp.csr_matrix(np.asarray(values, dtype=np.float32))
    if raw is not None:
        adata.raw = ad.AnnData(X=sp.csr_matrix(np.asarray(raw, dtype=np.float32)), var=adata.var.copy())
    adata.write_h5ad(path)
    return path


def random_counts(n_cells: int, n_genes: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lam = rng.gamma(0.3, 2.0, size=n_genes)
    return rng.poisson(lam[None, :] * rng.uniform(0.5, 2.0, size=(n_cells, 1))).astype(np.float32)
