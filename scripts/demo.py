"""The main job on the bundled real data, stage by stage, through the same commands a user runs.

`make demo` calls this: prepare (the bundled PBMC cells, plus a small *synthetic* drug-response
fixture so the fourth task can be shown) -> tokenizer -> train the tiny preset -> evaluate ->
three questions answered -> where everything was written. Each stage prints its command; every
stage writes atomically and a second run replaces the first's outputs.

Two choices made for 2 CPU cores: sentences of the top 50 genes (ChatCell used 100; training cost
grows with the sentence length), and every task for every cell (`--mode all`), since 700 cells
are few.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from chatcell_jax.cli import main as chatcell
from chatcell_jax.singlecell import manifest
from chatcell_jax.singlecell.prepare import demo_data_path
from chatcell_jax.singlecell.records import load_split

SYNTHETIC_DRUG = "demo-drug"


def stage(title: str, argv: list[str]) -> None:
    print(f"\n=== {title}\n$ chatcell {shlex.join(argv)}", flush=True)
    started = time.perf_counter()
    code = chatcell(argv)
    if code != 0:
        sys.exit(f"stage '{title}' failed with exit code {code}")
    print(f"--- {title}: {time.perf_counter() - started:.0f} s", flush=True)


def write_synthetic_drug_fixture(path: Path, n_cells: int = 240, seed: int = 0) -> Path:
    """A SYNTHETIC drug-response data set (not real data): PBMC-like counts where 'sensitive' and
    'resistant' cells each over-express their own 25 genes. It only exists to show the drug task."""
    pbmc = ad.read_h5ad(demo_data_path())
    genes = pbmc.var_names.to_numpy()
    rng = np.random.default_rng(seed)
    base = np.asarray(pbmc.X[rng.integers(0, pbmc.n_obs, n_cells)].todense(), dtype=np.float32)
    signatures = rng.permutation(len(genes))[:50].reshape(2, 25)
    response = np.array(["sensitive", "resistant"])[rng.integers(0, 2, n_cells)]
    for row, label in enumerate(response):
        base[row, signatures[0 if label == "sensitive" else 1]] += rng.poisson(30, 25)
    adata = ad.AnnData(
        X=sp.csr_matrix(base),
        obs=pd.DataFrame({"response": response}, index=[f"synthetic_{i}" for i in range(n_cells)]),
        var=pd.DataFrame(index=genes),
    )
    adata.uns["note"] = "SYNTHETIC fixture for the chatcell-jax demo; not measured data"
    adata.write_h5ad(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo_out"))
    parser.add_argument("--steps", type=int, help="training steps (DEMO_STEPS; default: configs/train/demo.yaml's)")
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    drug_file = write_synthetic_drug_fixture(out / "synthetic_drug_response.h5ad")
    print(f"wrote {drug_file} (a small SYNTHETIC drug-response fixture, clearly not real data)")
    stage(
        "Step 1: cell sentences and instructions (bundled PBMC cells + the synthetic drug fixture)",
        [
            "prepare",
            "--demo",
            "--mode",
            "all",
            "--stratify",
            "--top-k",
            "50",
            "--drug-input",
            str(drug_file),
            "--drug",
            SYNTHETIC_DRUG,
            "--response-key",
            "response",
            "--out",
            str(out / "data"),
            "--overwrite",
        ],
    )
    stage(
        "Step 2: vocabulary adaptation (one token per gene)",
        ["tokenizer", "--data", str(out / "data"), "--out", str(out / "tokenizer"), "--overwrite"],
    )
    steps = [] if args.steps is None else ["--set", f"steps={args.steps}"]
    length = "configs/train/demo.yaml's steps" if args.steps is None else f"{args.steps} steps"
    stage(
        f"Train the tiny preset ({length})",
        [
            "train",
            "--config",
            "configs/train/demo.yaml",
            "--set",
            f"data={out / 'data'}",
            "--set",
            f"tokenizer={out / 'tokenizer'}",
            "--set",
            f"out={out / 'run'}",
            *steps,
            "--set",
            "overwrite=true",
        ],
    )
    stage(
        "Evaluate on the test split (metrics, baselines, report)",
        [
            "evaluate",
            str(out / "run"),
            "--data",
            str(out / "data"),
            "--split",
            "test",
            "--out",
            str(out / "report"),
            "--overwrite",
        ],
    )
    ask_three_questions(out)
    print(f"\nDone in {time.perf_counter() - started:.0f} s. Everything is under {out}/:")
    for name, what in [
        ("data/", "train/valid/test.jsonl + manifest.json"),
        ("tokenizer/", "the HF tokenizer"),
        ("run/", "model/, metrics.jsonl, loss_curve.png, config.json"),
        ("report/", "report.md, metrics.json, figures"),
        ("synthetic_drug_response.h5ad", "the synthetic drug fixture"),
    ]:
        print(f"  {out / name}: {what}")
    print(f"Talk to the model: .venv/bin/chatcell chat {out / 'run'}   or   .venv/bin/chatcell web {out / 'run'}")


def ask_three_questions(out: Path) -> None:
    test = load_split(out / "data", "test")
    annotation = next(r for r in test if r["task"] == "annotation")
    drug = next(r for r in test if r["task"] == "drug_sensitivity")
    cell_types = manifest.load(out / "data").labels.cell_type
    cell_type = annotation["label"]
    questions = [
        (annotation["source"], f"true answer: {annotation['label']}"),
        (f"Generate the top 20 genes of a {cell_type} cell.", "a pseudo-cell of that type"),
        (drug["source"], f"true answer: {drug['label']} (synthetic fixture)"),
    ]
    assert cell_type in cell_types
    for question, note in questions:
        print(f"\n=== Question ({note})\n{question[:300]}{'...' if len(question) > 300 else ''}", flush=True)
        if chatcell(["chat", str(out / "run"), question, "--mode", "sample"]) != 0:
            sys.exit("the chat stage failed")


if __name__ == "__main__":
    main()
