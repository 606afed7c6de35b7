"""End to end on the bundled PBMC cells: predictions file -> `chatcell evaluate` -> report and figures."""

import json
from pathlib import Path

import numpy as np
import pytest

from chatcell_jax.cli import main
from chatcell_jax.errors import InputError
from chatcell_jax.evaluate import EvaluateOptions, evaluate_predictions, read_predictions
from chatcell_jax.evaluate import report as report_module
from chatcell_jax.evaluate.realcells import load_real_cells
from chatcell_jax.singlecell import manifest as manifest_lib
from chatcell_jax.singlecell.prepare import PrepareOptions, demo_data_path, prepare_dataset
from chatcell_jax.singlecell.records import load_split

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("evaluate") / "pbmc"
    prepare_dataset(out, cells_input=demo_data_path(), options=PrepareOptions())
    return out


def noisy_predictions(data: Path, seed: int = 0) -> list[dict]:
    """The test split answered by a mediocre fake model: 60 % right labels, a malformed answer,
    generated sentences that are another cell's sentence with one planted non-gene."""
    rng = np.random.default_rng(seed)
    records = load_split(data, "test")
    labels = sorted({r["label"] for r in records})
    sentences = [r["target"] for r in records if r["task"] != "annotation"]
    out = []
    for i, record in enumerate(records):
        if record["task"] == "annotation":
            output = record["target"] if rng.random() < 0.6 else str(rng.choice(labels))
            output = "not sure" if i == 0 else output
        else:
            output = " ".join(str(rng.choice(sentences)).split()[:99] + ["NOTAGENE"])
        out.append(dict(record, output=output))
    return out


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def cli_report(data, tmp_path_factory) -> Path:
    """`chatcell evaluate --predictions` with a run directory holding a training log."""
    base = tmp_path_factory.mktemp("report")
    run = base / "run"
    run.mkdir()
    write_jsonl(
        run / "metrics.jsonl",
        [{"step": s, "loss": 5.0 / (1 + s)} for s in range(0, 100, 10)]
        + [{"step": 50, "valid_loss": 1.5}, {"step": 90, "valid_loss": 1.2}, {"note": "no numbers"}],
    )
    predictions = write_jsonl(base / "predictions.jsonl", noisy_predictions(data))
    out = base / "report"
    code = main(
        ["evaluate", "--data", str(data), "--predictions", str(predictions), "--out", str(out), "--run-dir", str(run)]
    )
    assert code == 0
    return out


def test_report_renders_every_figure_as_a_png(cli_report):
    metrics = json.loads((cli_report / "metrics.json").read_text())
    expected = {
        "figures/confusion_annotation.png",
        "figures/pca_pseudo_cells.png",
        "figures/task_accuracy.png",
        "figures/training_curve.png",
    }
    assert set(metrics["figures"]) == expected
    for relative in expected:
        blob = (cli_report / relative).read_bytes()
        assert blob[:8] == PNG_MAGIC, relative
        assert len(blob) > 5000, relative
    markdown = (cli_report / "report.md").read_text()
    for relative in expected:
        assert f"]({relative})" in markdown
    assert not list(cli_report.parent.glob(".report.partial-*"))


def test_report_scores_the_fake_model(cli_report):
    metrics = json.loads((cli_report / "metrics.json").read_text())
    tasks = metrics["tasks"]
    annotation = tasks["annotation"]["model"]
    assert annotation["n"] == 26
    assert annotation["malformed"] == pytest.approx(100 / 26)  # the one "not sure"
    assert 30 < annotation["accuracy"] < 80
    random_generation = tasks["random_generation"]["model"]
    assert random_generation["validity"] == pytest.approx(99.0)  # one planted non-gene per 100 words
    assert tasks["random_generation"]["baselines"]["real_sentences"]["validity"] == 100.0
    knn = tasks["pseudo_cell_generation"]["knn"]
    assert set(knn["expression"]) == {"model", "real_sentences", "real_expression"}
    assert set(knn["expression"]["model"]) == {"5", "10", "25", "50"}
    distances = tasks["pseudo_cell_generation"]["distances"]
    assert distances["model"]["types"] > 0
    assert tasks["pseudo_cell_generation"]["model"]["validity"] == pytest.approx(99.0)
    # without `output_genes` there are no gene-constrained rows
    assert "model_constrained" not in tasks["random_generation"] and "model_constrained" not in distances
    assert "model_constrained" not in tasks["pseudo_cell_generation"]
    markdown = (cli_report / "report.md").read_text()
    assert "ChatCell-large (reference, accuracy) | 81.63" in markdown
    assert "baseline: logistic_regression" in markdown


def test_baselines_on_pbmc_are_sensible(cli_report):
    baselines = json.loads((cli_report / "metrics.json").read_text())["tasks"]["annotation"]["baselines"]
    majority, knn, logistic = (baselines[k]["accuracy"] for k in ("majority", "knn", "logistic_regression"))
    assert 10 < majority < 60  # the most common PBMC type is well under half of the cells
    assert logistic > majority + 20
    assert knn > majority + 10
    assert all(b["malformed"] == 0 for b in baselines.values())


def test_perfect_predictions_and_label_probs(data, tmp_path):
    records = load_split(data, "test")
    predictions = []
    for record in records:
        extra = {}
        if record["task"] == "annotation":
            extra = {"label_probs": {record["target"]: 0.9, "Dendritic": 0.1}}
        predictions.append(dict(record, output=record["target"], **extra))
    metrics = evaluate_predictions(data, "test", predictions, tmp_path / "r")
    tasks = metrics["tasks"]
    assert tasks["annotation"]["model"]["accuracy"] == 100.0
    assert tasks["annotation"]["model_constrained"]["accuracy"] == 100.0
    assert tasks["random_generation"]["model"]["validity"] == 100.0
    assert tasks["random_generation"]["model"]["uniqueness"] == 100.0
    # Generating exactly the real sentences equals the real-sentence baseline up to the self-vote.
    exact = tasks["pseudo_cell_generation"]["knn"]["levenshtein"]
    assert exact["model"]["5"]["quality"] >= exact["real_sentences"]["5"]["quality"]
    assert not (tmp_path / "r" / "figures" / "training_curve.png").exists()  # no run directory


def with_gene_answers(predictions: list[dict], n: int) -> list[dict]:
    """Generation records plus `output_genes`: n distinct genes (the first of another record's
    target, as a gene-constrained answer would be)."""
    sentences = [p["target"] for p in predictions if p["task"] != "annotation"]
    out = []
    for i, record in enumerate(predictions):
        if record["task"] != "annotation":
            record = dict(record, output_genes=" ".join(sentences[(i * 7) % len(sentences)].split()[:n]))
        out.append(record)
    return out


def test_gene_constrained_answers_are_reported_next_to_the_free_ones(data, tmp_path):
    top_k = manifest_lib.load(data).top_k
    predictions = write_jsonl(tmp_path / "p.jsonl", with_gene_answers(noisy_predictions(data), top_k))
    out = tmp_path / "r"
    assert main(["evaluate", "--data", str(data), "--predictions", str(predictions), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    random_generation, pseudo = metrics["tasks"]["random_generation"], metrics["tasks"]["pseudo_cell_generation"]
    for section in (random_generation, pseudo):
        assert section["model"]["validity"] == pytest.approx(99.0)  # the free answers, as before
        constrained = section["model_constrained"]
        assert (constrained["validity"], constrained["uniqueness"], constrained["mean_length"]) == (100.0, 100.0, top_k)
    for space in ("expression", "levenshtein"):
        table = pseudo["knn"][space]
        assert list(table)[:2] == ["model", "model_constrained"]
        assert set(table["model_constrained"]) == {"5", "10", "25", "50"}
        assert 0 <= table["model_constrained"]["5"]["quality"] <= 100
    assert pseudo["distances"]["model_constrained"]["types"] > 0
    markdown = (out / "report.md").read_text()
    assert markdown.count("| model (constrained to N distinct genes) | 100.00 |") == 2  # random and pseudo-cells
    assert "| expression | model_constrained |" in markdown and "valid, unique and of length N" in markdown
    assert "model (constrained)" in report_module.headline_groups(metrics["tasks"])["random generation\nvalidity"]
    # scored only when every record of the task has one
    partial = [
        dict(p, output_genes="CD74") if p["task"] == "random_generation" and i % 2 else p
        for i, p in enumerate(noisy_predictions(data))
    ]
    metrics = evaluate_predictions(data, "test", partial, tmp_path / "partial")
    assert "model_constrained" not in metrics["tasks"]["random_generation"]
    with pytest.raises(InputError, match="output_genes"):
        evaluate_predictions(data, "test", [dict(p, output_genes=["CD74"]) for p in partial], tmp_path / "bad")


def test_the_report_says_how_the_constrained_pseudo_cells_were_drawn(data, tmp_path):
    """Records with `candidates` and `type_probability` (as `chatcell evaluate` writes them): the
    pseudo-cell section states the draw, K and the model's mean probability of the requested type."""
    top_k = manifest_lib.load(data).top_k
    predictions = [
        dict(p, candidates=16, type_probability=0.25 + 0.5 * (i % 2)) if p["task"] == "pseudo_cell_generation" else p
        for i, p in enumerate(with_gene_answers(noisy_predictions(data), top_k))
    ]
    probabilities = [p["type_probability"] for p in predictions if p["task"] == "pseudo_cell_generation"]
    metrics = evaluate_predictions(data, "test", predictions, tmp_path / "r")
    draw = metrics["tasks"]["pseudo_cell_generation"]["constrained_draw"]
    assert draw == {
        "candidates": 16,
        "n_scored": len(probabilities),
        "mean_type_probability": pytest.approx(np.mean(probabilities)),
    }
    markdown = (tmp_path / "r" / "report.md").read_text()
    assert "each the best of 16 samples by the model's own annotation" in markdown
    assert f"on average {100 * draw['mean_type_probability']:.1f} %" in markdown
    assert "constrained_draw" not in metrics["tasks"]["random_generation"]
    plain = evaluate_predictions(data, "test", with_gene_answers(noisy_predictions(data), top_k), tmp_path / "plain")
    assert "constrained_draw" not in plain["tasks"]["pseudo_cell_generation"]  # the records do not say
    assert "best of" not in (tmp_path / "plain" / "report.md").read_text()


def test_rebuilt_real_cells_reproduce_the_prepared_sentences(data):
    records = [r for r in load_split(data, "test") if r["task"] != "annotation"]
    cells = load_real_cells(manifest_lib.load(data), [r["cell_id"] for r in records])
    assert cells.sentences == [r["target"] for r in records]
    assert cells.expression.shape == (len(records), len(manifest_lib.load(data).dataset_genes))
    assert cells.expression.max() > 0


def test_failed_report_leaves_nothing_behind(data, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(report_module.figures, "task_bars", broken)
    with pytest.raises(RuntimeError):
        evaluate_predictions(data, "test", noisy_predictions(data), tmp_path / "r")
    assert list(tmp_path.iterdir()) == []


def test_existing_report_needs_overwrite(data, tmp_path):
    (tmp_path / "r").mkdir()
    predictions = [p for p in noisy_predictions(data) if p["task"] == "random_generation"]
    with pytest.raises(InputError, match="--overwrite"):
        evaluate_predictions(data, "test", predictions, tmp_path / "r")
    metrics = evaluate_predictions(data, "test", predictions, tmp_path / "r", options=EvaluateOptions(overwrite=True))
    assert set(metrics["tasks"]) == {"random_generation"}


def test_bad_predictions_are_input_errors(data, tmp_path, capsys):
    bad = write_jsonl(tmp_path / "p.jsonl", [{"source": "s", "target": "t", "output": "o"}])
    code = main(["evaluate", "--data", str(data), "--predictions", str(bad), "--out", str(tmp_path / "r")])
    assert code == 2
    assert "task" in capsys.readouterr().err
    no_output = write_jsonl(tmp_path / "q.jsonl", [{"source": "s", "target": "t", "task": "annotation"}])
    with pytest.raises(InputError, match="output"):
        read_predictions(no_output)
    assert not (tmp_path / "r").exists()


def test_evaluate_runs_a_trained_model_end_to_end(trained_run, tmp_path):
    """The model path: a briefly trained tiny model answers the split, label scoring included."""
    run_dir, data_dir = trained_run
    out, saved = tmp_path / "report", tmp_path / "answers.jsonl"
    code = main(
        [
            "evaluate",
            str(run_dir),
            "--data",
            str(data_dir),
            "--out",
            str(out),
            "--save-predictions",
            str(saved),
            "--no-progress",
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    n_test = len(load_split(data_dir, "test"))
    assert metrics["n_predictions"] == n_test
    annotation = metrics["tasks"]["annotation"]
    assert annotation["model_constrained"]["malformed"] == 0.0  # constrained answers are always labels
    assert set(annotation["baselines"]) == {"majority", "knn", "logistic_regression"}
    assert "figures/training_curve.png" in metrics["figures"]
    answers = read_predictions(saved)
    assert len(answers) == n_test and all(isinstance(a["output"], str) for a in answers)
    assert all(abs(sum(a["label_probs"].values()) - 1) < 1e-4 for a in answers if a["task"] == "annotation")
    # the generation records also get gene-constrained answers: exactly N distinct genes
    top_k = metrics["top_k"]
    for task in ("random_generation", "pseudo_cell_generation"):
        constrained = metrics["tasks"][task]["model_constrained"]
        assert (constrained["validity"], constrained["uniqueness"], constrained["mean_length"]) == (100.0, 100.0, top_k)
    assert "model_constrained" in metrics["tasks"]["pseudo_cell_generation"]["knn"]["expression"]
    generated = [a for a in answers if a["task"] in ("random_generation", "pseudo_cell_generation")]
    assert generated and all(len(set(a["output_genes"].split())) == top_k for a in generated)
    # pseudo-cells: the best of the default 16 samples by the model's own annotation
    pseudo = [a for a in answers if a["task"] == "pseudo_cell_generation"]
    assert pseudo and all(a["candidates"] == 16 and 0 < a["type_probability"] <= 1 for a in pseudo)
    assert metrics["tasks"]["pseudo_cell_generation"]["constrained_draw"]["candidates"] == 16
    assert not any("candidates" in a for a in answers if a["task"] != "pseudo_cell_generation")


def test_a_part_of_the_split_is_scored_with_a_coverage_warning(data, tmp_path, capsys):
    """4 annotation answers of a split of many: the headline says so (issue 15)."""
    four = [dict(r, output=r["target"]) for r in load_split(data, "test") if r["task"] == "annotation"][:4]
    predictions = write_jsonl(tmp_path / "p.jsonl", four)
    out = tmp_path / "r"
    assert main(["evaluate", "--data", str(data), "--predictions", str(predictions), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    records = sum(r["task"] == "annotation" for r in load_split(data, "test"))
    assert f"annotation accuracy 100.0 % (on 4 of {records} records)" in printed
    assert f"note: only 4 of the {records} annotation records of the test split have a prediction" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["coverage"]["annotation"] == {"predicted": 4, "records": records}
