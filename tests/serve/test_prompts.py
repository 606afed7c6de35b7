"""Inference prompts: same sentences as training, and plain-language questions understood."""

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from chatcell_jax.errors import InputError
from chatcell_jax.evaluate.realcells import load_real_cells
from chatcell_jax.serve import prompts
from chatcell_jax.singlecell import prepare as ins
from chatcell_jax.singlecell.records import load_split
from tests.helpers.h5ad import random_counts


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("p") / "data"
    manifest = ins.prepare_dataset(out, cells_input=ins.demo_data_path(), options=ins.PrepareOptions(mode="all"))
    return out, manifest


def test_inference_sentences_equal_training_sentences(prepared):
    out, manifest = prepared
    built = {}
    for chunk in prompts.sentences_from_h5ad(ins.demo_data_path(), manifest.recipe("cells"), chunk_size=97):
        built.update(zip(chunk.cell_ids, chunk.sentences))
    assert len(built) == 700
    for record in load_split(out, "test"):
        if record["task"] == "random_generation":
            assert built[record["cell_id"]] == record["target"]


@pytest.fixture(scope="module")
def odd_file(tmp_path_factory) -> Path:
    """Counts in a layer and in .raw, log values in X, a var column of symbols, a duplicated symbol
    and a gene expressed in one cell only."""
    counts = random_counts(60, 40, seed=9)
    counts[:, 7] = 0
    counts[0, 7] = 3
    genes = [f"Gene{i}" for i in range(40)]
    genes[5] = "Gene4"
    var = pd.DataFrame({"symbol": [f"Sym{i}" for i in range(40)]}, index=pd.Index(genes, dtype=str))
    obs = pd.DataFrame(
        {"cell_type": ["x", "y", "z"] * 20, "response": ["sensitive", "resistant"] * 30},
        index=[f"c{i}" for i in range(60)],
    )
    adata = ad.AnnData(X=sp.csr_matrix(np.log1p(counts)), obs=obs, var=var)
    adata.layers["counts"] = sp.csr_matrix(counts)
    adata.raw = ad.AnnData(X=sp.csr_matrix(counts), var=var.copy())
    path = tmp_path_factory.mktemp("odd") / "odd.h5ad"
    adata.write_h5ad(path)
    return path


LAYER = {"layer": "counts"}
CELL_OPTIONS = {  # every prepare option that changes a sentence
    "layer": ({}, LAYER),
    "top_k": ({"top_k": 7}, LAYER),
    "seed": ({"seed": 5}, LAYER),
    "median_total": ({}, {**LAYER, "target_total": "median"}),
    "raw": ({}, {"use_raw": True}),
    "gene_key": ({}, {**LAYER, "gene_key": "symbol"}),
    "min_cells": ({}, {**LAYER, "min_cells": 2}),
    "non_integer": ({}, {"allow_non_integer": True}),
    "min_genes": ({}, {**LAYER, "min_genes": 8}),
}


def rebuilt(path: Path, manifest, kind: str) -> dict[str, str]:
    """Sentences as inference builds them, checked against the evaluation's rebuild."""
    found = {}
    for chunk in prompts.sentences_from_h5ad(path, manifest.recipe(kind), chunk_size=13):
        found.update(zip(chunk.cell_ids, chunk.sentences))
    real = load_real_cells(manifest, list(found), kind, chunk_size=17)
    assert dict(zip(real.cell_ids, real.sentences)) == found
    return found


@pytest.mark.parametrize("name", CELL_OPTIONS)
def test_every_sentence_option_is_rebuilt_at_inference(odd_file, tmp_path, name):
    options, source = CELL_OPTIONS[name]
    opts = ins.PrepareOptions(
        mode="all", top_k=options.get("top_k", 12), seed=options.get("seed", 42), source=ins.SourceOptions(**source)
    )
    manifest = ins.prepare_dataset(tmp_path / "d", cells_input=odd_file, options=opts)
    built = rebuilt(odd_file, manifest, "cells")
    targets = [
        r
        for split in ("train", "valid", "test")
        for r in load_split(tmp_path / "d", split)
        if r["task"] == "random_generation"
    ]
    assert targets and all(built[r["cell_id"]] == r["target"] for r in targets)
    if name == "min_cells":
        assert all("GENE7" not in s.split() for s in built.values())


@pytest.mark.parametrize("values, source", [("raw", {}), ("normalized", LAYER)])
def test_drug_sentences_are_rebuilt_from_the_drug_source(odd_file, tmp_path, values, source):
    """A drug source next to a cells source: its own recipe (raw: ranked as stored, no count checks)."""
    cells_file = odd_file
    drug = ins.DrugOptions("Cisplatin", "response", values=values)
    manifest = ins.prepare_dataset(
        tmp_path / "d",
        cells_input=cells_file,
        drug_input=odd_file,
        drug=drug,
        options=ins.PrepareOptions(mode="all", top_k=9, source=ins.SourceOptions(**LAYER)),
        drug_source_options=ins.SourceOptions(**source),
    )
    built = rebuilt(odd_file, manifest, "drug")
    records = [
        r
        for split in ("train", "valid", "test")
        for r in load_split(tmp_path / "d", split)
        if r["task"] == "drug_sensitivity"
    ]
    assert records
    genes = set(manifest.dataset_genes)
    for record in records:
        in_prompt = [w for w in (w.strip(".,:;()?") for w in record["source"].split()) if w in genes]
        assert built[record["cell_id"]].split() == in_prompt


def test_prompts_carry_n_and_fields():
    assert "3" in prompts.annotation_prompt("A B C") and "A B C" in prompts.annotation_prompt("A B C")
    assert "Cisplatin" in prompts.drug_prompt("A B C D", "Cisplatin")
    assert "CD56+ NK" in prompts.generation_prompt(50, "CD56+ NK") and "50" in prompts.generation_prompt(50)


def test_question_analysis(prepared):
    _, manifest = prepared
    genes = " ".join(list(manifest.genes)[:20])
    assert prompts.analyse_question(f"What cell expresses {genes}?", manifest).task == "annotation"
    drug = prompts.analyse_question(f"Is a cell with {genes} sensitive to cisplatin?", manifest)
    assert drug.task == "drug_sensitivity"
    pseudo = prompts.analyse_question("Give me the top 100 genes of a cd14+ monocyte", manifest)
    assert pseudo.task == "pseudo_cell_generation" and pseudo.cell_type == "CD14+ Monocyte"
    assert prompts.analyse_question("top genes of a CD56+ NK cell", manifest).unknown_gene_like == []
    assert prompts.analyse_question("Generate any cell", manifest).task == "random_generation"
    odd = prompts.analyse_question(f"Which type: {genes} NOTGENE42?", manifest)
    assert odd.unknown_gene_like == ["NOTGENE42"] and len(odd.genes) == 20
    with pytest.raises(InputError, match="empty"):
        prompts.analyse_question("   ", manifest)


@pytest.mark.parametrize(
    "text, n", [("top 50 genes", 50), ("the 20 most expressed", 20), ("a cell", 100), ("top-5000 genes", 1000)]
)
def test_top_k_in_question(text, n):
    assert prompts.top_k_in_question(text, 100) == n
