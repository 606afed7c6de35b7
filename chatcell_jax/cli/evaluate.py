"""`chatcell evaluate`: ChatCell's metrics, baselines and a report for a model on a prepared split."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from chatcell_jax.atomic import check_output
from chatcell_jax.cli.score import add_candidates_argument
from chatcell_jax.cli.types import positive_int, seed_int
from chatcell_jax.errors import InputError
from chatcell_jax.serve.pseudocells import check_candidates


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score a model (or its saved answers) on a split: metrics, baselines, report",
        description="Run the model over a prepared split (or read its answers with --predictions), compute "
        "ChatCell's metrics and baselines on the same cells, and write metrics.json, report.md "
        "and PNG figures.",
    )
    p.add_argument(
        "model",
        nargs="?",
        type=Path,
        help="model directory, training run directory or HF T5 directory (optional with --predictions)",
    )
    p.add_argument("--data", type=Path, required=True, help="prepared data directory (manifest.json, <split>.jsonl)")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--out", type=Path, required=True, help="report directory (written atomically)")
    p.add_argument(
        "--predictions",
        type=Path,
        help="JSONL of the split's records with an 'output' field (e.g. from `chatcell generate`): "
        "score these instead of running the model",
    )
    p.add_argument("--save-predictions", type=Path, help="also write the model's answers to this JSONL")
    p.add_argument(
        "--run-dir",
        type=Path,
        help="directory with metrics.jsonl for the training curve (default: the model directory)",
    )
    p.add_argument("--cells", type=Path, help="the cells .h5ad, if it moved since `chatcell prepare`")
    p.add_argument("--max-train-cells", type=positive_int, default=5000, help="train cells for baselines and distances")
    p.add_argument(
        "--workers", type=positive_int, default=1, help="threads for Levenshtein distances and BLAS (default 1)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    g = p.add_argument_group("running the model")
    g.add_argument("--batch-size", type=positive_int, default=16)
    g.add_argument("--max-source-length", type=positive_int, default=512)
    g.add_argument("--max-new-tokens", type=positive_int, help="default: 2 x top-N + 16")
    g.add_argument("--seed", type=seed_int, default=0)
    g.add_argument(
        "--no-constrained",
        action="store_true",
        help="skip the constrained answers: label scoring for the classification tasks and the "
        "gene-constrained answers (exactly N distinct genes, same sampling settings) for the "
        "generation tasks, reported as model_constrained",
    )
    add_candidates_argument(
        g, "gene-constrained pseudo-cells (output_genes of the pseudo-cell records)", "; --no-constrained skips them"
    )
    g.add_argument("--truncate", action="store_true", help="cut overlong prompts instead of failing")
    g.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from chatcell_jax.evaluate import EvaluateOptions, evaluate_predictions, read_predictions

    check_output(args.out, overwrite=args.overwrite, kind="directory")
    check_candidates(args.candidates)  # before loading the model
    if args.predictions is not None:
        predictions = read_predictions(args.predictions)
    elif args.model is not None:
        predictions = _run_model(args)
    else:
        raise InputError("give a MODEL to run, or --predictions FILE.jsonl with its answers")
    options = EvaluateOptions(
        max_train_cells=args.max_train_cells,
        workers=args.workers,
        seed=args.seed,
        cells_path=str(args.cells) if args.cells else None,
        overwrite=args.overwrite,
    )
    metrics = evaluate_predictions(args.data, args.split, predictions, args.out, args.run_dir or args.model, options)
    print(f"wrote {args.out}: {_summary(metrics)}")
    for note in metrics["notes"]:
        print(f"  note: {note}")
    return 0


def _run_model(args: argparse.Namespace) -> list[dict]:
    from chatcell_jax.evaluate.predict import predict_records
    from chatcell_jax.singlecell import manifest
    from chatcell_jax.singlecell.records import load_split

    records = load_split(args.data, args.split)
    predictions = predict_records(
        args.model,
        records,
        manifest.load(args.data),
        batch_size=args.batch_size,
        max_source_length=args.max_source_length,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        constrained=not args.no_constrained,
        truncate=args.truncate,
        progress=not args.no_progress,
        candidates=args.candidates,
    )
    if args.save_predictions:
        args.save_predictions.write_text(
            "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions), encoding="utf-8"
        )
    return predictions


def _summary(metrics: dict) -> str:
    parts = []
    for task, section in metrics["tasks"].items():
        if "accuracy" in section.get("model", {}):
            parts.append(f"{task} accuracy {section['model']['accuracy']:.1f} %{_coverage(metrics, task)}")
        elif task == "random_generation":
            rate = lambda m: f"{m['validity']:.1f} / {m['uniqueness']:.1f} %"
            parts.append(f"random validity / uniqueness {rate(section['model'])}" + _constrained(section, rate))
        elif task == "pseudo_cell_generation":
            knn = section["knn"]["expression"]
            quality = lambda m: f"{m['5']['quality']:.1f} %"
            parts.append(f"pseudo-cell k-NN quality@5 {quality(knn['model'])}" + _constrained(knn, quality))
    return "; ".join(parts)


def _coverage(metrics: dict, task: str) -> str:
    """ " (on 4 of 69 records)" when only part of the split was scored."""
    seen = metrics.get("coverage", {}).get(task)
    if not seen or seen["predicted"] >= seen["records"]:
        return ""
    return f" (on {seen['predicted']} of {seen['records']} records)"


def _constrained(section: dict, show) -> str:
    return f" (gene-constrained {show(section['model_constrained'])})" if "model_constrained" in section else ""
