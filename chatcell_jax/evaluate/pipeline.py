"""From a split's predictions to metrics, baselines and a report: the model-free half of evaluation.

`evaluate_predictions` is the one boundary between a model and its evaluation. Whatever produced
the answers (our decoder, `chatcell generate`, a converted ChatCell checkpoint, another tool),
scoring starts from records of the split plus their `output` text (and, optionally, constrained
answers: for the classification tasks `label_probs`, {label: probability} from label scoring; for
the generation tasks `output_genes`, a gene-constrained answer), so every number can be rebuilt
from a predictions file without running a model. Constrained answers are scored as
`model_constrained` next to `model` when every record of the task has them.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from chatcell_jax.errors import InputError
from chatcell_jax.evaluate import baselines, generation
from chatcell_jax.evaluate.cellsets import RealCellSets, cell_key
from chatcell_jax.evaluate.metrics import classification_metrics, confusion_matrix, normalise_answer
from chatcell_jax.evaluate.report import write_report
from chatcell_jax.singlecell import manifest as manifest_lib
from chatcell_jax.singlecell import tasks as task_registry
from chatcell_jax.singlecell.manifest import Manifest
from chatcell_jax.singlecell.records import load_split

log = logging.getLogger(__name__)


@dataclass
class EvaluateOptions:
    """Knobs of the evaluation; the defaults are what the report documents."""

    max_train_cells: int = 5000  # train cells for the baselines and the distance reference
    max_genes: int = 2000  # most variable genes used as baseline features
    seed: int = 0
    # Threads for the Levenshtein matrices and for BLAS (PCA, logistic regression). One by default:
    # the matrices are small, and BLAS threads competing for busy cores are far slower than one.
    workers: int = 1
    cells_path: str | None = None  # the cells source, when it moved since `chatcell prepare`
    overwrite: bool = False


def check_predictions(predictions: Sequence[dict]) -> dict[str, list[dict]]:
    """Predictions grouped by task; each needs string `output`, a known `task` and `target`."""
    if not predictions:
        raise InputError("no predictions to evaluate; give a JSONL of the split's records with an 'output' field")
    by_task: dict[str, list[dict]] = defaultdict(list)
    for number, record in enumerate(predictions, 1):
        if not isinstance(record, dict) or not isinstance(record.get("output"), str):
            raise InputError(f"prediction {number} has no string field 'output'")
        if record.get("task") not in task_registry.NAMES:
            raise InputError(
                f"prediction {number} has task {record.get('task')!r}, not one of "
                f"{list(task_registry.NAMES)}; "
                "generate from the split's JSONL (e.g. `chatcell generate --input DATA/test.jsonl`) "
                "so every record keeps its task, label and cell_id"
            )
        if "target" not in record:
            raise InputError(f"prediction {number} has no 'target' (the reference answer)")
        if not isinstance(record.get("output_genes", ""), str):
            raise InputError(f"prediction {number}: 'output_genes' must be a string (space-joined genes)")
        by_task[record["task"]].append(record)
    return dict(by_task)


def _match_split(by_task: dict[str, list[dict]], split_records: Sequence[dict], split: str) -> list[str]:
    """Notes about predictions that are not records of the split (they are still scored) and about
    records of the split without a prediction (the scores then describe a part of it only)."""
    known = {(r.get("task"), cell_key(r)) for r in split_records}
    notes = []
    strays = sum((task, cell_key(r)) not in known for task, recs in by_task.items() for r in recs)
    if strays:
        notes.append(
            f"{strays} prediction(s) are not records of the {split} split; they are scored against their own targets"
        )
    for task, (predicted, records) in coverage(by_task, split_records).items():
        if predicted < records:
            notes.append(
                f"only {predicted} of the {records} {task} records of the {split} split have a prediction: "
                f"the {task} scores describe those {predicted} only"
            )
    for note in notes:
        log.warning("%s", note)
    return notes


def coverage(by_task: dict[str, list[dict]], split_records: Sequence[dict]) -> dict[str, tuple[int, int]]:
    """{task: (records of the split with a prediction, records of the split)} for the split's tasks."""
    predicted = {(task, cell_key(r)) for task, recs in by_task.items() for r in recs}
    counts: dict[str, list[int]] = {}
    for r in split_records:
        task = r.get("task")
        counts.setdefault(task, [0, 0])
        counts[task][0] += (task, cell_key(r)) in predicted
        counts[task][1] += 1
    return {task: (a, b) for task, (a, b) in counts.items()}


# --- classification tasks ----------------------------------------------------------------------------


def _constrained(records: Sequence[dict]) -> list[str] | None:
    """Argmax answers from `label_probs`, when every record has them."""
    if not all(isinstance(r.get("label_probs"), dict) and r["label_probs"] for r in records):
        return None
    return [max(r["label_probs"], key=r["label_probs"].get) for r in records]


def classification_task(
    task: str, records: Sequence[dict], manifest: Manifest, real: RealCellSets | None, options: EvaluateOptions
) -> tuple[dict, dict]:
    """Model metrics (free text, and constrained when given), baselines; confusion matrix for the figure."""
    labels = manifest.labels_of(task_registry.get(task).label_set) or sorted({r["target"] for r in records})
    truth, outputs = [r["target"] for r in records], [r["output"] for r in records]
    result = {"labels": labels, "model": classification_metrics(truth, outputs, labels)}
    constrained = _constrained(records)
    if constrained is not None:
        result["model_constrained"] = classification_metrics(truth, constrained, labels)
    normalised = [normalise_answer(label) for label in labels]
    matrix = confusion_matrix([normalise_answer(t) for t in truth], [normalise_answer(o) for o in outputs], normalised)
    result["confusion"] = {"rows": labels, "columns": labels + ["(malformed)"], "counts": matrix.tolist()}
    if real is not None and real.has_expression:
        result["baselines"] = _classification_baselines(records, real, labels, options)
    return result, {"labels": labels, "matrix": matrix}


def _classification_baselines(
    records: Sequence[dict], real: RealCellSets, labels: list[str], options: EvaluateOptions
) -> dict:
    train = real.train()
    if len(train) < 2:
        return {}
    ids = [str(r["cell_id"]) for r in records]
    loaded = set(real.split_labels) | set(real.train_labels)
    if not ids or not all(i in loaded for i in ids):
        log.warning("some scored cells are not cells of the split: classification baselines skipped")
        return {}
    test = real.subset(ids, [r["target"] for r in records])
    return baselines.classification_baselines(
        train.expression, train.labels, test.expression, test.labels, labels, options.max_genes, options.seed
    )


# --- generation tasks -------------------------------------------------------------------------------


def _space(manifest: Manifest) -> generation.Space:
    fit = manifest.inverse_fit
    if not fit:
        raise InputError(
            "the manifest has no inverse transform (data converted from ChatCell JSON?); pseudo-cell "
            "metrics need one: prepare the data from an .h5ad with `chatcell prepare`"
        )
    return generation.Space(list(manifest.dataset_genes), fit, manifest.sentence_length)


def _gene_answers(records: Sequence[dict]) -> list[str] | None:
    """The gene-constrained answers (`output_genes`), when every record has one."""
    if not all(isinstance(r.get("output_genes"), str) for r in records):
        return None
    return [r["output_genes"] for r in records]


def pseudo_cell_task(
    records: Sequence[dict], manifest: Manifest, real: RealCellSets, options: EvaluateOptions
) -> tuple[dict, dict]:
    reference = real.split()
    if len(reference) < 2:
        raise InputError("the split has fewer than two labelled real cells: pseudo-cell k-NN needs a reference")
    keys = [cell_key(r) for r in records]
    if real.has_expression and set(keys) <= set(real.split_labels):
        own = real.subset(keys, [r["label"] for r in records])
    else:
        own = generation.CellSet(keys, [r["label"] for r in records], [r["target"] for r in records])
    result, figure = generation.pseudo_cells(
        [r["output"] for r in records],
        [r["label"] for r in records],
        own,
        reference,
        real.train(),
        _space(manifest),
        options.workers,
        _gene_answers(records),
    )
    draw = _self_consistent_draw(records)
    if draw is not None:
        result["constrained_draw"] = draw
    return result, figure


def _self_consistent_draw(records: Sequence[dict]) -> dict | None:
    """How the gene-constrained pseudo-cells were drawn, when every record says so: the most
    `candidates` any record had (`chatcell evaluate` draws the same K for all) and the mean of the
    model's own annotation probability of the requested type for the kept cells."""
    if _gene_answers(records) is None or not all(type(r.get("candidates")) is int for r in records):
        return None
    scored = [float(r["type_probability"]) for r in records if isinstance(r.get("type_probability"), (int, float))]
    return {
        "candidates": max(r["candidates"] for r in records),
        "n_scored": len(scored),
        "mean_type_probability": sum(scored) / len(scored) if scored else None,
    }


def random_generation_task(records: Sequence[dict], split_records: Sequence[dict], manifest: Manifest) -> dict:
    real = [r["target"] for r in split_records if r.get("task") == "random_generation"]
    return generation.random_generation(
        [r["output"] for r in records],
        real,
        list(manifest.dataset_genes),
        manifest.sentence_length,
        _gene_answers(records),
    )


# --- the whole evaluation ----------------------------------------------------------------------------


def evaluate_predictions(
    data_dir: str | Path,
    split: str,
    predictions: Sequence[dict],
    out_dir: str | Path,
    run_dir: str | Path | None = None,
    options: EvaluateOptions | None = None,
) -> dict:
    """Score predictions of a prepared split, run the baselines, write the report; returns the metrics.

    `predictions`: the split's records (source, target, task, cell_id, label) each with `output`
    and optionally `label_probs`. `run_dir`: a model/training directory whose `metrics.jsonl`
    gives the training curve. The report directory is written atomically.
    """
    options = options or EvaluateOptions()
    with _blas_threads(options.workers):
        return _evaluate(data_dir, split, predictions, out_dir, run_dir, options)


@contextmanager
def _blas_threads(n: int):
    """Limit BLAS/OpenMP threads while evaluating (a no-op without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=max(1, n)):
        yield


def _evaluate(data_dir, split: str, predictions: Sequence[dict], out_dir, run_dir, options: EvaluateOptions) -> dict:
    manifest = manifest_lib.load(data_dir)
    split_records = load_split(data_dir, split)
    by_task = check_predictions(predictions)
    notes = _match_split(by_task, split_records, split)
    real = _real_cell_sets(manifest, by_task, split_records, data_dir, options, notes)
    tasks, figures = {}, {}
    for task in task_registry.NAMES:
        if task not in by_task:
            continue
        log.info("scoring %d %s predictions", len(by_task[task]), task)
        tasks[task], figure = _score_task(task, by_task[task], split_records, manifest, real, options)
        if figure:
            figures[task] = figure
    metrics = {
        "data": str(Path(data_dir).resolve()),
        "split": split,
        "n_predictions": len(predictions),
        "coverage": {t: {"predicted": a, "records": b} for t, (a, b) in coverage(by_task, split_records).items()},
        "top_k": manifest.sentence_length,
        "tasks": tasks,
        "notes": notes,
        "options": {k: v for k, v in vars(options).items() if k != "overwrite"},
    }
    write_report(out_dir, metrics, figures, run_dir, overwrite=options.overwrite)
    return metrics


def _score_task(
    task: str, records: list[dict], split_records, manifest: Manifest, real: dict, options
) -> tuple[dict, dict]:
    if task_registry.get(task).classifies:
        return classification_task(task, records, manifest, real.get(task_registry.get(task).source_kind), options)
    if task == "pseudo_cell_generation":
        return pseudo_cell_task(records, manifest, real["cells"], options)
    return random_generation_task(records, split_records, manifest), {}


def _real_cell_sets(
    manifest: Manifest, by_task: dict, split_records, data_dir, options: EvaluateOptions, notes: list[str]
) -> dict[str, RealCellSets]:
    """Real cells per source kind, for the kinds the scored tasks need."""
    kinds = {task_registry.get(t).source_kind for t in by_task if task_registry.get(t).needs_label}
    if not kinds:
        return {}
    train_records = load_split(data_dir, "train")
    out = {}
    for kind in sorted(kinds):
        path = options.cells_path if kind == "cells" else None
        out[kind] = RealCellSets(
            manifest,
            kind,
            split_records,
            train_records,
            max_train_cells=options.max_train_cells,
            seed=options.seed,
            path=path,
        )
        if out[kind].note:
            notes.append(out[kind].note)
    return out


def read_predictions(path: str | Path) -> list[dict]:
    """Records with an `output` field from a JSONL file (e.g. written by `chatcell generate`)."""
    from chatcell_jax.singlecell.records import read_jsonl

    records = list(read_jsonl(path))
    missing = next((i for i, r in enumerate(records, 1) if "output" not in r), None)
    if missing is not None:
        raise InputError(
            f"{path}: record {missing} has no 'output' field; is this a predictions file "
            "(e.g. from `chatcell generate`)?"
        )
    return records


__all__ = ["EvaluateOptions", "evaluate_predictions", "read_predictions"]
