"""Rebuild the bundled PBMC demo data from the scanpy 1.11.5 wheel (BSD-3-Clause).

scanpy ships `scanpy/datasets/10x_pbmc68k_reduced.h5ad`: 700 PBMC cells x 765 genes, 10 cell types in
`obs["bulk_labels"]`. Its `X` is scaled, but `.raw.X` holds ln(1 + counts * 1e4 / n_counts), so the
integer UMI counts come back exactly as round(expm1(raw.X) * n_counts / 1e4).

Usage (needs the registry once, never at run time):
    pip download --no-deps scanpy==1.11.5 -d /tmp/wheels
    python scripts/build_demo_data.py /tmp/wheels/scanpy-1.11.5-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import zipfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

MEMBER = "scanpy/datasets/10x_pbmc68k_reduced.h5ad"
OUT = Path(__file__).resolve().parents[1] / "chatcell_jax" / "demo_data" / "pbmc68k_counts.h5ad"


def recover_counts(raw_x: sp.csr_matrix, n_counts: np.ndarray) -> sp.csr_matrix:
    counts = raw_x.astype(np.float64).tocsr(copy=True)
    row_scale = np.repeat(n_counts / 1e4, np.diff(counts.indptr))
    counts.data = np.round(np.expm1(counts.data) * row_scale)
    # The float32 source leaves at most ~0.1 of rounding slack; anything larger means a wrong recipe.
    slack = np.abs(np.expm1(raw_x.data.astype(np.float64)) * row_scale - counts.data).max()
    if slack > 0.25:
        raise SystemExit(f"counts do not round cleanly (max slack {slack:.3f}); the source changed")
    counts.data = counts.data.astype(np.int32)
    counts.eliminate_zeros()
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("wheel", type=Path, help="scanpy-1.11.5-py3-none-any.whl")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(args.wheel) as wheel:
        source = Path(wheel.extract(MEMBER, tmp))
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        src = ad.read_h5ad(source)
    raw_x = sp.csr_matrix(src.raw.X)
    raw_x.sum_duplicates()  # canonical order, so data lines up with every copy made below
    n_counts = src.obs["n_counts"].to_numpy(np.float64)
    counts = recover_counts(raw_x, n_counts)
    obs = pd.DataFrame(
        {"cell_type": src.obs["bulk_labels"].astype(str).astype("category"), "n_counts_original": n_counts},
        index=src.obs_names.astype(str),
    )
    var = pd.DataFrame(index=src.raw.var_names.astype(str))
    out = ad.AnnData(X=counts, obs=obs, var=var)
    # Kept so a test can re-derive the counts from the published values without the wheel.
    out.layers["scanpy_raw_log1p"] = raw_x.astype(np.float32)
    out.uns["provenance"] = {"source": f"scanpy==1.11.5 wheel, {MEMBER}", "source_sha256": digest}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    out.write_h5ad(args.out, compression="gzip")
    print(
        f"wrote {args.out} ({out.n_obs} cells x {out.n_vars} genes, {counts.nnz} non-zeros, "
        f"{int(counts.sum())} UMIs), source sha256 {digest}"
    )


if __name__ == "__main__":
    main()
