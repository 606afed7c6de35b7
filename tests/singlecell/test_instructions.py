"""`prepare_dataset` end to end on real .h5ad files: splits, manifest, drug task, bad input."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from chatcell_jax.errors import InputError
from chatcell_jax.singlecell import prepare as ins
from chatcell_jax.singlecell.records import read_jsonl
from tests.helpers.h5ad import random_counts, write_h5ad


def records(out: Path) -> dict[str, list[dict]]:
    return {s: list(read_jsonl(out / f"{s}.jsonl")) for s in ("train", "valid", "test")}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "data"
    manifest = ins.prepare_dataset(out, cells_input=ins.demo_data_path())
    return out, manifest


def test_demo_splits_are_disjoint_and_sized(demo):
    out, manifest = demo
    recs = records(out)
    ids = {s: {r["cell_id"] for r in rs} for s, rs in recs.items()}
    assert not (ids["train"] & ids["valid"]) and not (ids["train"] & ids["test"]) and not (ids["valid"] & ids["test"])
    assert [len(ids[s]) for s in ("train", "valid", "test")] == [560, 70, 70]
    assert sum(len(r) for r in recs.values()) == 700  # mode "one": one instruction per cell
    assert manifest.counts["total"] == {"train": 560, "valid": 70, "test": 70}
    assert set(manifest.labels.cell_type) == {r["label"] for rs in recs.values() for r in rs}
    assert len(manifest.labels.cell_type) == 10


def test_demo_records_are_consistent(demo):
    out, manifest = demo
    for record in records(out)["train"]:
        assert set(record) == {"source", "target", "task", "cell_id", "label"}
        if record["task"] in ("random_generation", "pseudo_cell_generation"):
            genes = record["target"].split()
            assert len(genes) == 100 and len(set(genes)) == 100
            assert f"{len(genes)}" in record["source"]
            assert all(g in manifest.genes for g in genes)
        if record["task"] == "pseudo_cell_generation":
            assert record["label"] in record["source"]
        if record["task"] == "annotation":
            assert record["target"] == record["label"]
    fit = manifest.inverse_fit
    assert -0.9 < fit.slope < -0.5 and 2.0 < fit.intercept < 3.2 and fit.r_squared > 0.8


def test_same_seed_same_bytes_other_seed_other_split(demo, tmp_path):
    out, _ = demo
    again = tmp_path / "again"
    ins.prepare_dataset(again, cells_input=ins.demo_data_path())
    for name in ("train.jsonl", "valid.jsonl", "test.jsonl", "manifest.json"):
        if name == "manifest.json":
            strip = lambda m: {k: v for k, v in m.items() if k != "sources"}  # timings differ
            assert strip(json.loads((out / name).read_text())) == strip(json.loads((again / name).read_text()))
        else:
            assert (out / name).read_bytes() == (again / name).read_bytes()
    other = tmp_path / "other"
    ins.prepare_dataset(other, cells_input=ins.demo_data_path(), options=ins.PrepareOptions(seed=1))
    assert {r["cell_id"] for r in records(other)["test"]} != {r["cell_id"] for r in records(out)["test"]}


def test_chunking_does_not_change_output(demo, tmp_path):
    out, _ = demo
    small = tmp_path / "small"
    opts = ins.PrepareOptions(source=ins.SourceOptions(chunk_size=33))
    ins.prepare_dataset(small, cells_input=ins.demo_data_path(), options=opts)
    assert (small / "train.jsonl").read_bytes() == (out / "train.jsonl").read_bytes()


def test_stratified_all_tasks_and_top_k(tmp_path):
    out = tmp_path / "d"
    opts = ins.PrepareOptions(mode="all", stratify=True, top_k=20)
    manifest = ins.prepare_dataset(out, cells_input=ins.demo_data_path(), options=opts)
    recs = records(out)
    assert sum(len(r) for r in recs.values()) == 3 * 700
    valid_types = {r["label"] for r in recs["valid"]}
    assert len(valid_types) == 10  # every type, even the 8-cell one, reaches valid when stratified
    gen = next(r for r in recs["train"] if r["task"] == "random_generation")
    assert len(gen["target"].split()) == 20 and "20" in gen["source"]
    assert manifest.top_k == 20


def test_drug_task_with_response_map(tmp_path):
    counts = random_counts(60, 40, seed=3) * 1.5  # TPM-like, non-integer
    response = np.array(["Sensitive", "Resistant", "Holiday"] * 20)
    path = write_h5ad(tmp_path / "drug.h5ad", counts, obs={"cluster": response})
    out = tmp_path / "drug"
    manifest = ins.prepare_dataset(
        out,
        drug_input=path,
        drug=ins.DrugOptions("Cisplatin", "cluster", {"Holiday": "sensitive"}),
    )
    recs = [r for rs in records(out).values() for r in rs]
    assert len(recs) == 60 and {r["task"] for r in recs} == {"drug_sensitivity"}
    by_cell = {r["cell_id"]: r["target"] for r in recs}
    assert by_cell["cell2"] == "sensitive" and by_cell["cell1"] == "resistant" and by_cell["cell0"] == "sensitive"
    assert all("Cisplatin" in r["source"] for r in recs)
    assert manifest.labels.drug == ("Cisplatin",) and manifest.labels.response == ("resistant", "sensitive")


def test_unmapped_response_is_named(tmp_path):
    path = write_h5ad(tmp_path / "drug.h5ad", random_counts(6, 8), obs={"cluster": ["Holiday", "Sensitive"] * 3})
    with pytest.raises(InputError, match=r"Holiday.*--response-map Holiday=sensitive"):
        ins.prepare_dataset(tmp_path / "o", drug_input=path, drug=ins.DrugOptions("X", "cluster"))
    assert not (tmp_path / "o").exists()


def test_cells_and_drug_in_one_dataset(tmp_path):
    drug = write_h5ad(
        tmp_path / "drug.h5ad", random_counts(30, 765, seed=5), obs={"r": ["sensitive", "resistant"] * 15}
    )
    manifest = ins.prepare_dataset(
        tmp_path / "both", cells_input=ins.demo_data_path(), drug_input=drug, drug=ins.DrugOptions("Erlotinib", "r")
    )
    tasks = {t for split in ("train", "valid", "test") for t in manifest.counts[split]}
    assert tasks == {"random_generation", "pseudo_cell_generation", "annotation", "drug_sensitivity"}
    assert manifest.inverse_fit == manifest.source("cells").inverse_fit != manifest.source("drug").inverse_fit


def test_layer_raw_and_gene_key(tmp_path):
    counts = random_counts(20, 10)
    genes = [f"g{i}" for i in range(10)]
    path = write_h5ad(
        tmp_path / "a.h5ad",
        np.log1p(counts),
        genes=genes,
        layers={"counts": counts},
        raw=counts,
        obs={"cell_type": ["x", "y"] * 10},
    )
    a = ins.prepare_dataset(
        tmp_path / "layer", cells_input=path, options=ins.PrepareOptions(source=ins.SourceOptions(layer="counts"))
    )
    b = ins.prepare_dataset(
        tmp_path / "raw", cells_input=path, options=ins.PrepareOptions(source=ins.SourceOptions(use_raw=True))
    )
    assert a.genes == b.genes and set(a.genes) <= {g.upper() for g in genes}
    assert (tmp_path / "layer" / "train.jsonl").read_bytes() == (tmp_path / "raw" / "train.jsonl").read_bytes()


def test_qc_filters_and_empty_cells_are_counted(tmp_path):
    counts = random_counts(40, 30, seed=2)
    counts[3] = 0
    counts[:, 5] = 0
    counts[0, 5] = 1  # gene 5 in a single cell: dropped by --min-cells 2
    path = write_h5ad(tmp_path / "a.h5ad", counts, obs={"cell_type": ["x"] * 40})
    opts = ins.PrepareOptions(source=ins.SourceOptions(min_cells=2, min_genes=1))
    manifest = ins.prepare_dataset(tmp_path / "o", cells_input=path, options=opts)
    section = manifest.sources[0]
    assert section.stats["cells_dropped_no_counts"] == 1 and section.stats["genes_dropped_min_cells"] >= 1
    assert "GENE5" in section.recipe.dropped_genes
    assert "GENE5" not in manifest.genes
    assert sum(manifest.counts["total"].values()) == 39


def test_median_target_total(tmp_path):
    counts = random_counts(30, 20, seed=4)
    path = write_h5ad(tmp_path / "a.h5ad", counts, obs={"cell_type": ["x"] * 30})
    manifest = ins.prepare_dataset(
        tmp_path / "o", cells_input=path, options=ins.PrepareOptions(source=ins.SourceOptions(target_total="median"))
    )
    assert manifest.recipe("cells").target_total == pytest.approx(np.median(counts.sum(1)))


def test_duplicated_genes_are_made_unique_with_a_warning(tmp_path, caplog):
    counts = random_counts(10, 4) + 1
    path = write_h5ad(tmp_path / "a.h5ad", counts, genes=["A", "a", "B", "C"], obs={"cell_type": ["x"] * 10})
    with caplog.at_level(logging.WARNING):
        manifest = ins.prepare_dataset(tmp_path / "o", cells_input=path)
    assert "duplicated gene symbols" in caplog.text
    assert set(manifest.dataset_genes) == {"A", "A-1", "B", "C"}


# --- bad input ------------------------------------------------------------------------------------


def test_missing_and_non_h5ad_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        ins.prepare_dataset(tmp_path / "o", cells_input=tmp_path / "nope.h5ad")
    bogus = tmp_path / "cells.h5ad"
    bogus.write_text("gene,cell\n")
    with pytest.raises(InputError, match="not an .h5ad"):
        ins.prepare_dataset(tmp_path / "o", cells_input=bogus)
    assert not (tmp_path / "o").exists()


def test_missing_label_key_lists_columns(tmp_path):
    path = write_h5ad(tmp_path / "a.h5ad", random_counts(5, 5), obs={"louvain": list("abcab"), "batch": [1] * 5})
    with pytest.raises(InputError, match=r"no obs column 'cell_type'.*\['batch', 'louvain'\]"):
        ins.prepare_dataset(tmp_path / "o", cells_input=path)


@pytest.mark.parametrize(
    "transform, message",
    [
        (lambda c: np.log1p(c), "looks log-transformed"),
        (lambda c: (c - c.mean(0)) / (c.std(0) + 1), "looks scaled"),
        (lambda c: np.where(c > 2, np.nan, c), "NaN"),
    ],
)
def test_values_that_are_not_counts(tmp_path, transform, message):
    path = write_h5ad(
        tmp_path / "a.h5ad", transform(random_counts(30, 10)), obs={"cell_type": ["x"] * 30}, sparse=False
    )
    with pytest.raises(InputError, match=message):
        ins.prepare_dataset(tmp_path / "o", cells_input=path)
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.partial*"))


def test_empty_after_filtering(tmp_path):
    path = write_h5ad(tmp_path / "a.h5ad", random_counts(10, 5), obs={"cell_type": ["x"] * 10})
    opts = ins.PrepareOptions(source=ins.SourceOptions(min_genes=1000))
    with pytest.raises(InputError, match="no cells left after filtering"):
        ins.prepare_dataset(tmp_path / "o", cells_input=path, options=opts)


def test_existing_output_is_kept_unless_overwrite(demo, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="--overwrite"):
        ins.prepare_dataset(out, cells_input=ins.demo_data_path())
    assert (out / "keep.txt").read_text() == "mine"
    ins.prepare_dataset(out, cells_input=ins.demo_data_path(), overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "manifest.json").is_file()


def test_bad_options():
    with pytest.raises(InputError, match="unknown task"):
        ins.PrepareOptions(tasks=("annotation", "dance")).validate()
    with pytest.raises(InputError, match="split fractions"):
        ins.PrepareOptions(split_fractions=(0.9, 0.2, 0.1)).validate()


def test_augmented_copies_are_training_cells_only(demo, tmp_path):
    out, manifest = demo
    augmented = tmp_path / "aug"
    opts = ins.PrepareOptions(augment=2)
    got = ins.prepare_dataset(augmented, cells_input=ins.demo_data_path(), options=opts)
    plain, recs = records(out), records(augmented)
    for split in ("valid", "test"):  # held-out cells are never augmented
        assert (augmented / f"{split}.jsonl").read_bytes() == (out / f"{split}.jsonl").read_bytes()
    assert len(recs["train"]) == 3 * len(plain["train"]) and got.sources[0].stats["augmented_cells"] == 2 * 560
    assert got.cells_per_split == manifest.cells_per_split  # copies are records, not cells
    assert {r["cell_id"] for r in recs["train"]} == {r["cell_id"] for r in plain["train"]}
    label_of = {r["cell_id"]: r["label"] for r in plain["train"]}
    assert all(r["label"] == label_of[r["cell_id"]] for r in recs["train"])
    new = {r["source"] + r["target"] for r in recs["train"]} - {r["source"] + r["target"] for r in plain["train"]}
    assert len(new) > 1.9 * len(plain["train"])  # thinning almost always changes the sentence
    assert got.inverse_fit == manifest.inverse_fit  # fitted on the original cells
    small = tmp_path / "small"
    ins.prepare_dataset(
        small,
        cells_input=ins.demo_data_path(),
        options=ins.PrepareOptions(augment=2, source=ins.SourceOptions(chunk_size=33)),
    )
    assert (small / "train.jsonl").read_bytes() == (augmented / "train.jsonl").read_bytes()


@pytest.mark.parametrize(
    "options, message",
    [
        (ins.PrepareOptions(augment=-1), "--augment must be 0 or more"),
        (ins.PrepareOptions(augment=1, augment_min_depth=0.0), "--augment-min-depth"),
        (ins.PrepareOptions(augment=1, source=ins.SourceOptions(allow_non_integer=True)), "--allow-non-integer"),
    ],
)
def test_bad_augment_options(options, message):
    with pytest.raises(InputError, match=message):
        options.validate()


def test_empty_labels_are_counted_as_missing(tmp_path):
    """An empty-string label is a missing label: counted and warned like NaN, not silently dropped."""
    labels = ["B", "", "T", None, "  "] * 8
    path = write_h5ad(tmp_path / "cells.h5ad", random_counts(40, 30), obs={"cell_type": labels})
    opts = ins.PrepareOptions(label_key="cell_type", mode="all", top_k=10)
    manifest = ins.prepare_dataset(tmp_path / "out", cells_input=path, options=opts)
    assert manifest.sources[0].stats["cells_missing_label"] == 24
