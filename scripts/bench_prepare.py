"""Benchmark: cell-sentence building, ours vs cell2sentence, and a streamed million-cell file.

Each measurement runs in a fresh subprocess, so its peak resident memory (ru_maxrss) is its own.

1. Same matrix for both: synthetic raw counts (default 20,000 cells x 20,000 genes, ~1,500 expressed
   genes per cell). Ours: `cells.rank_chunk` over CSR chunks (normalise + log10 + rank + symbols).
   Peer: `cell2sentence.utils.generate_sentences` (v1.2.0) on the normalised matrix; its
   normalisation is not timed, which favours the peer.
2. Streamed: `prepare_dataset` end to end (both passes, instructions written) on a synthetic .h5ad
   of 1,000,000 cells x 20,000 genes, written chunk by chunk.

Setup for the peer (not a project dependency; it pulls torch/jupyter otherwise):
    .venv/bin/pip install --no-deps cell2sentence==1.2.0 && .venv/bin/pip install plotnine
Run: .venv/bin/python scripts/bench_prepare.py [--cells 20000] [--million 1000000] [--skip-million]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp


def synthetic_counts(n_cells: int, n_genes: int, genes_per_cell: int, seed: int) -> sp.csr_matrix:
    """Raw-count-like CSR: Zipf-ish gene popularity, Poisson-ish counts, duplicates merged."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_genes + 1) ** 0.8
    popularity = rng.permutation(popularity / popularity.sum())
    rows = np.repeat(np.arange(n_cells), genes_per_cell)
    cols = rng.choice(n_genes, size=rows.size, p=popularity)
    vals = rng.geometric(0.4, size=rows.size).astype(np.float32)
    matrix = sp.csr_matrix((vals, (rows, cols)), shape=(n_cells, n_genes))
    matrix.sum_duplicates()
    return matrix


def write_streamed_h5ad(path: Path, n_cells: int, n_genes: int, genes_per_cell: int, chunk: int = 50_000) -> None:
    """An AnnData-layout CSR file written chunk by chunk (never the whole matrix in memory)."""
    import h5py
    import pandas as pd
    from anndata.io import write_elem

    with h5py.File(path, "w") as f:
        x = f.create_group("X")
        x.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": (n_cells, n_genes)})
        data = x.create_dataset("data", (0,), maxshape=(None,), dtype="float32", chunks=(1 << 20,))
        indices = x.create_dataset("indices", (0,), maxshape=(None,), dtype="int32", chunks=(1 << 20,))
        indptr = np.zeros(n_cells + 1, np.int64)
        for start in range(0, n_cells, chunk):
            part = synthetic_counts(min(chunk, n_cells - start), n_genes, genes_per_cell, seed=start)
            lo = data.shape[0]
            data.resize((lo + part.nnz,))
            indices.resize((lo + part.nnz,))
            data[lo:] = part.data
            indices[lo:] = part.indices
            indptr[start + 1 : start + part.shape[0] + 1] = lo + part.indptr[1:]
        x.create_dataset("indptr", data=indptr)
        labels = np.array([f"type{i % 12}" for i in range(n_cells)])
        write_elem(
            f, "obs", pd.DataFrame({"cell_type": pd.Categorical(labels)}, index=[f"c{i}" for i in range(n_cells)])
        )
        write_elem(f, "var", pd.DataFrame(index=[f"GENE{i}" for i in range(n_genes)]))


# --- workers (run in their own process) ------------------------------------------------------------


def worker_ours(matrix_path: str) -> dict:
    from chatcell_jax.singlecell import cells

    matrix = sp.load_npz(matrix_path).tocsr()
    symbols = np.array([f"GENE{i}" for i in range(matrix.shape[1])], dtype=object)
    start = time.perf_counter()
    n_words = 0
    for lo in range(0, matrix.shape[0], 2048):
        ranked = cells.rank_chunk(matrix[lo : lo + 2048], lo, seed=42, target_total=1e4)
        words = symbols[ranked.genes]
        sentences = [" ".join(words[a:b]) for a, b in zip(ranked.indptr[:-1], ranked.indptr[1:])]
        n_words += sum(len(s) for s in sentences)
    return {"seconds": time.perf_counter() - start, "cells": matrix.shape[0]}


def worker_c2s(matrix_path: str) -> dict:
    from collections import OrderedDict

    import anndata as ad

    dist = importlib.metadata.distribution("cell2sentence")
    spec = importlib.util.spec_from_file_location("c2s_utils", dist.locate_file("cell2sentence/utils.py"))
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)  # the module alone: the package __init__ would import torch
    matrix = sp.load_npz(matrix_path).tocsr()
    totals = np.asarray(matrix.sum(axis=1)).ravel()
    normalised = sp.diags(1e4 / totals) @ matrix
    normalised.data = np.log10(1 + normalised.data)
    adata = ad.AnnData(X=normalised.tocsr())
    vocab = OrderedDict((f"GENE{i}", 1) for i in range(matrix.shape[1]))
    start = time.perf_counter()
    utils.generate_sentences(adata, vocab)
    return {"seconds": time.perf_counter() - start, "cells": matrix.shape[0]}


def worker_prepare(h5ad_path: str, out_dir: str) -> dict:
    from chatcell_jax.singlecell import prepare as ins

    start = time.perf_counter()
    ins.prepare_dataset(
        out_dir, cells_input=h5ad_path, options=ins.PrepareOptions(source=ins.SourceOptions(chunk_size=4096))
    )
    return {"seconds": time.perf_counter() - start}


def peak_rss_mb() -> float:
    """This process's own peak resident memory. (ru_maxrss would include the parent's at fork.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_worker(name: str, *args: str) -> dict:
    code = (
        f"import json, resource, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        f"import bench_prepare as b; r = b.worker_{name}(*{list(args)!r}); "
        "r['peak_rss_mb'] = b.peak_rss_mb(); print(json.dumps(r))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=20_000)
    parser.add_argument("--genes", type=int, default=20_000)
    parser.add_argument("--genes-per-cell", type=int, default=1_500)
    parser.add_argument("--million", type=int, default=1_000_000, help="cells in the streamed file")
    parser.add_argument("--million-genes-per-cell", type=int, default=200)
    parser.add_argument("--skip-million", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        matrix = synthetic_counts(args.cells, args.genes, args.genes_per_cell, seed=0)
        sp.save_npz(tmp / "m.npz", matrix, compressed=False)
        print(f"matrix: {args.cells} cells x {args.genes} genes, {matrix.nnz / args.cells:.0f} expressed genes/cell")
        ours, peer = run_worker("ours", str(tmp / "m.npz")), run_worker("c2s", str(tmp / "m.npz"))
        rows = [("chatcell-jax cells.rank_chunk", ours), ("cell2sentence generate_sentences", peer)]
        print("\n| implementation | cells/s | peak RSS (MB) |\n|---|---|---|")
        for name, r in rows:
            print(f"| {name} | {r['cells'] / r['seconds']:,.0f} | {r['peak_rss_mb']:,.0f} |")
        print(f"\nspeed ratio (ours / cell2sentence): {peer['seconds'] / ours['seconds']:.1f}x")
        if args.skip_million:
            return
        path = tmp / "million.h5ad"
        t0 = time.perf_counter()
        write_streamed_h5ad(path, args.million, args.genes, args.million_genes_per_cell)
        size_gb = path.stat().st_size / 1e9
        print(
            f"\nstreamed file: {args.million:,} cells x {args.genes:,} genes, {size_gb:.2f} GB on disk "
            f"(written in {time.perf_counter() - t0:.0f} s)"
        )
        r = run_worker("prepare", str(path), str(tmp / "prepared"))
        print("\n| prepare_dataset (both passes + JSONL) | cells/s | peak RSS (MB) |\n|---|---|---|")
        print(f"| {args.million:,} cells | {args.million / r['seconds']:,.0f} | {r['peak_rss_mb']:,.0f} |")


if __name__ == "__main__":
    main()
