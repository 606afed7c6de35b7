"""Batch commands and chat on a real (tiny, briefly trained) model, through the command line."""

import hashlib
import json
import subprocess
import sys

import anndata as ad
import numpy as np
import pytest

from chatcell_jax.cli import main
from chatcell_jax.singlecell.prepare import demo_data_path
from chatcell_jax.singlecell.records import load_split


def run_cli(*argv) -> int:
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def prompts_file(trained_run, tmp_path_factory):
    _, data = trained_run
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    records = load_split(data, "test")[:5]
    path.write_text("".join(json.dumps({"source": r["source"], "id": i}) + "\n" for i, r in enumerate(records)))
    return path


def _generate(run, prompts_file, out, mode, *extra) -> list[dict]:
    """`chatcell generate` of 12 new tokens at most; the output rows."""
    args = ("generate", run, "--input", prompts_file, "--out", out, "--mode", mode, "--max-new-tokens", 12)
    assert run_cli(*args, "--no-progress", *extra) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.parametrize("mode", ["greedy", "beam", "sample"])
def test_generate_is_independent_of_batch_size(trained_run, prompts_file, tmp_path, mode):
    run, _ = trained_run
    outputs = []
    for batch in (1, 4):
        out = tmp_path / f"out{batch}.jsonl"
        outputs.append(_generate(run, prompts_file, out, mode, "--batch-size", batch, "--devices", 1))
    assert [r["output"] for r in outputs[0]] == [r["output"] for r in outputs[1]]
    assert [r["id"] for r in outputs[0]] == list(range(5))  # input fields kept, order kept
    assert all(isinstance(r["score"], float) for r in outputs[0])


@pytest.mark.parametrize("mode", ["beam", "sample"])
def test_generate_over_all_devices_equals_one_device(trained_run, prompts_file, tmp_path, mode):
    """--devices all (8 fake CPU devices here) splits each batch; batch 3 is rounded up to 8."""
    run, _ = trained_run
    outputs = []
    for devices in ("1", "all"):
        out = tmp_path / f"out-{devices}.jsonl"
        rows = _generate(
            run, prompts_file, out, mode, "--batch-size", 3, "--devices", devices, "--early-stopping", "true"
        )
        outputs.append([(r["output"], round(r["score"], 4)) for r in rows])
    assert outputs[0] == outputs[1]


def test_bad_device_count_is_a_named_error(trained_run, prompts_file, tmp_path, capsys):
    run, _ = trained_run
    assert run_cli("generate", run, "--input", prompts_file, "--out", tmp_path / "o.jsonl", "--devices", 99) == 2
    assert "--devices '99': give a number from 1 to 8" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_overlong_prompt_is_an_error_or_counted_truncation(trained_run, tmp_path, capsys):
    run, _ = trained_run
    prompts = tmp_path / "long.jsonl"
    prompts.write_text(json.dumps({"source": "CD74 " * 400}) + "\n")
    args = [
        "generate",
        run,
        "--input",
        prompts,
        "--out",
        tmp_path / "o.jsonl",
        "--max-source-length",
        64,
        "--max-new-tokens",
        4,
        "--no-progress",
    ]
    assert run_cli(*args) == 2
    assert "exceed the encoder limit of 64 tokens" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()
    assert run_cli(*args, "--truncate") == 0 and (tmp_path / "o.jsonl").is_file()


def test_annotate_writes_a_copy_with_known_labels(trained_run, tmp_path):
    run, data = trained_run
    source = demo_data_path()
    before = hashlib.sha256(source.read_bytes()).hexdigest()
    out = tmp_path / "annotated.h5ad"
    assert run_cli("annotate", run, source, "--out", out, "--no-progress") == 0
    assert hashlib.sha256(source.read_bytes()).hexdigest() == before  # input untouched
    adata = ad.read_h5ad(out)
    labels = json.loads((data / "manifest.json").read_text())["labels"]["cell_type"]
    assert adata.n_obs == 700 and set(adata.obs["chatcell_cell_type"]) <= set(labels)
    probs = adata.obs["chatcell_cell_type_probability"].to_numpy()
    assert np.all((probs > 0) & (probs <= 1))
    assert adata.X.shape == (700, 765)  # the matrix is carried over


def test_annotate_refuses_to_write_over_its_input(trained_run, capsys):
    run, _ = trained_run
    assert run_cli("annotate", run, demo_data_path(), "--out", demo_data_path(), "--no-progress") == 2
    assert "is also an input; the input is never overwritten" in capsys.readouterr().err


def test_predict_drug_answers_are_sensitive_or_resistant(trained_run, tmp_path):
    run, _ = trained_run
    out = tmp_path / "drug.h5ad"
    # The test model knows no drug: answers only with the explicit flag (the refusal: test_bad_input).
    args = ("predict-drug", run, demo_data_path(), "--drug", "Cisplatin", "--allow-unknown-drug", "--out", out)
    assert run_cli(*args, "--no-progress") == 0
    assert set(ad.read_h5ad(out).obs["chatcell_drug_response"]) <= {"sensitive", "resistant"}


def test_generate_cells_reconstructs_expression(trained_run, tmp_path):
    run, data = trained_run
    manifest = json.loads((data / "manifest.json").read_text())
    out = tmp_path / "cells.h5ad"
    assert (
        run_cli(
            "generate-cells",
            run,
            "--cell-type",
            "CD14+ Monocyte",
            "-n",
            4,
            "--out",
            out,
            "--max-new-tokens",
            20,
            "--no-progress",
        )
        == 0
    )
    cells = ad.read_h5ad(out)
    assert cells.n_obs == 4 and list(cells.var_names) == manifest["dataset_genes"]
    assert set(cells.obs["cell_type"]) == {"CD14+ Monocyte"}
    # gene-constrained by default: N = the training top-N distinct genes (--max-new-tokens is for --free)
    n = manifest["top_k"]
    assert all(len(set(s.split())) == len(s.split()) == n for s in cells.obs["sentence"])
    assert ((np.asarray(cells.X) > 0).sum(axis=1) == n).all()
    assert run_cli("generate-cells", run, "--cell-type", "Neuron", "--out", tmp_path / "x.h5ad") == 2
    assert (
        run_cli(
            "generate-cells",
            run,
            "-n",
            2,
            "--out",
            tmp_path / "free.h5ad",
            "--free",
            "--max-new-tokens",
            12,
            "--no-progress",
        )
        == 0
    )
    assert ad.read_h5ad(tmp_path / "free.h5ad").uns["chatcell_generation"]["decoding"] == "free"


def test_chat_one_shot_and_interactive(trained_run):
    run, data = trained_run
    genes = (
        " ".join(load_split(data, "test")[0]["target"].split()[:20])
        if load_split(data, "test")[0]["task"] != "annotation"
        else "CD74 HLA-DRA LYZ FTL CST3 TYROBP"
    )
    one_shot = subprocess.run(
        [sys.executable, "-m", "chatcell_jax.cli", "chat", str(run), f"Which cell type expresses {genes}?"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one_shot.returncode == 0, one_shot.stderr
    labels = json.loads((data / "manifest.json").read_text())["labels"]["cell_type"]
    first = one_shot.stdout.splitlines()[0]
    assert first.startswith("[annotation] ") and first.removeprefix("[annotation] ") in labels
    assert "%" in one_shot.stdout
    session = subprocess.run(
        [sys.executable, "-m", "chatcell_jax.cli", "chat", str(run), "--mode", "greedy"],
        input="Generate the top 10 genes of a CD19+ B cell\nWhat cell is FAKE99 " + genes + "?\n\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert session.returncode == 0, session.stderr
    assert "[pseudo cell generation]" in session.stdout and "[annotation]" in session.stdout
    generated = next(line for line in session.stdout.splitlines() if line.startswith("[pseudo cell generation] "))
    genes = generated.removeprefix("[pseudo cell generation] ").split()
    assert len(genes) == len(set(genes)) == 10  # gene-constrained by default
    assert "unknown to the model: FAKE99" in session.stdout


def test_sharded_generation_equals_single_device(trained_run):
    import jax

    from chatcell_jax.model.sharding import make_mesh
    from chatcell_jax.serve.decoding import GenerationConfig
    from chatcell_jax.serve.loading import load_generator

    run, data = trained_run
    texts = [r["source"] for r in load_split(data, "valid")[:8]]
    single, _ = load_generator(run, batch_size=8)
    mesh = make_mesh((8, 1, 1), jax.devices()[:8])
    sharded, _ = load_generator(run, batch_size=8, mesh=mesh)
    for cfg in (GenerationConfig(max_new_tokens=8, num_beams=2), GenerationConfig(max_new_tokens=8)):
        a = [x[0].token_ids for x in single.generate(texts, cfg)]
        b = [x[0].token_ids for x in sharded.generate(texts, cfg)]
        assert a == b
    labels = ["CD14+ Monocyte", "CD19+ B", "Dendritic"]
    np.testing.assert_allclose(single.classify(texts, labels), sharded.classify(texts, labels), atol=1e-5)
    assert np.allclose(single.classify(texts, labels).sum(axis=1), 1.0)


def test_bfloat16_answers_agree_with_float32(trained_run, prompts_file, tmp_path):
    """The bfloat16 compute path (for GPU/TPU scoring): really computed in bfloat16 (scores move),
    yet the same answers and label probabilities as float32 on this model."""
    from chatcell_jax.serve.decoding import GenerationConfig
    from chatcell_jax.serve.loading import load_generator

    run, data = trained_run
    texts = [r["source"] for r in load_split(data, "valid")[:8]]
    full, _ = load_generator(run, batch_size=8)
    half, _ = load_generator(run, batch_size=8, dtype="bfloat16")
    assert (full.config.dtype, half.config.dtype) == ("float32", "bfloat16")
    for cfg in (GenerationConfig(max_new_tokens=16, num_beams=4), GenerationConfig(max_new_tokens=16)):
        a, b = full.generate(texts, cfg), half.generate(texts, cfg)
        assert sum(x[0].token_ids == y[0].token_ids for x, y in zip(a, b)) >= 7
        gaps = [abs(x[0].score - y[0].score) for x, y in zip(a, b)]
        assert 0 < max(gaps) < 0.2
    labels = ["CD14+ Monocyte", "CD19+ B", "Dendritic"]
    p, q = full.classify(texts, labels), half.classify(texts, labels)
    assert np.abs(p - q).max() < 0.02 and (p.argmax(1) == q.argmax(1)).all()
    out = tmp_path / "half.jsonl"
    assert (
        run_cli(
            "generate",
            run,
            "--input",
            prompts_file,
            "--out",
            out,
            "--dtype",
            "bfloat16",
            "--max-new-tokens",
            8,
            "--no-progress",
            "--devices",
            1,
        )
        == 0
    )
    assert len(out.read_text().splitlines()) == 5
