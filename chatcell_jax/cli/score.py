"""Batch commands over a trained model: `generate`, `annotate`, `predict-drug`, `generate-cells`."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from pathlib import Path

from chatcell_jax.atomic import check_output
from chatcell_jax.cli.types import positive_int
from chatcell_jax.errors import InputError
from chatcell_jax.serve.options import MODES
from chatcell_jax.serve.pseudocells import DEFAULT_CANDIDATES, MAX_CANDIDATES, check_candidates

log = logging.getLogger(__name__)


def add_model_arguments(p: argparse.ArgumentParser, devices: str = "all") -> None:
    """Model, batching and device options. Batch commands split batches over every local device by
    default; interactive ones (`chat`, `web`) pass devices="1": a question or two per batch gains
    nothing from more devices and would compile for each."""
    p.add_argument("model", type=Path, help="model directory, training run directory, or HF T5 directory")
    p.add_argument("--manifest", type=Path, help="training data manifest.json (default: found next to the model)")
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=16,
        help="prompts per compiled batch (rounded up to a multiple of --devices)",
    )
    p.add_argument(
        "--devices",
        default=devices,
        help=f"local devices to split each batch over: a number or 'all' (default: {devices})",
    )
    p.add_argument("--max-source-length", type=positive_int, default=512, help="encoder limit in tokens")
    p.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        help="compute dtype (default: the model's own; bfloat16 is faster on GPU/TPU, while "
        "parameters, logits and scores stay float32)",
    )
    p.add_argument("--truncate", action="store_true", help="cut overlong prompts (counted) instead of failing")
    p.add_argument("--no-progress", action="store_true")


def add_candidates_argument(
    p: argparse.ArgumentParser,
    what: str,
    extra: str = "; beam search reranks its min(K, beams) beams, greedy has one answer; no effect with --free",
) -> None:
    """--candidates K: a pseudo-cell is the best of K gene-constrained samples by the model's own annotation."""
    p.add_argument(
        "--candidates",
        type=int,
        default=DEFAULT_CANDIDATES,
        metavar="K",
        help=f"{what}: draw K gene-constrained samples and keep the one the model's own annotation "
        f"gives the highest probability of the requested type (1 to {MAX_CANDIDATES}, default "
        f"{DEFAULT_CANDIDATES}; 1: plain constrained sampling{extra})",
    )


def add_output_argument(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--out", type=Path, required=True, help=what)
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def check_out(args: argparse.Namespace, *inputs) -> None:
    """The --out checks (chatcell_jax.atomic.check_output), before the model is loaded."""
    check_output(args.out, overwrite=args.overwrite, inputs=inputs)


def add_decoding_arguments(p: argparse.ArgumentParser, default_mode: str = "beam") -> None:
    g = p.add_argument_group("decoding")
    g.add_argument("--mode", choices=MODES, default=default_mode)
    g.add_argument("--num-beams", type=int, default=4)
    g.add_argument("--num-return-sequences", type=int, default=1)
    g.add_argument("--length-penalty", type=float, default=1.0)
    g.add_argument(
        "--early-stopping",
        choices=["false", "true", "never"],
        default="false",
        help="beam search stopping rule, as in Hugging Face generate()",
    )
    g.add_argument("--max-new-tokens", type=int, help="default: the training top-N + 16")
    g.add_argument("--min-new-tokens", type=int, default=0)
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--top-k", type=int, default=50)
    g.add_argument("--top-p", type=float, default=0.95)
    g.add_argument("--no-repeat-ngram-size", type=int, help="default: 2 when sampling (ChatCell), else 0")
    g.add_argument("--seed", type=int, default=0)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("generate", help="answer every prompt of a JSONL file")
    add_model_arguments(p)
    p.add_argument("--input", type=Path, required=True, help="JSONL, one object with 'source' per line")
    add_output_argument(p, "JSONL: each input record + output + score")
    add_decoding_arguments(p)
    p.set_defaults(func=run_generate)

    p = subparsers.add_parser("annotate", help="cell type of every cell of an .h5ad (constrained to known types)")
    add_model_arguments(p)
    p.add_argument("cells", type=Path, help="input .h5ad with raw counts (never modified)")
    add_output_argument(p, "output .h5ad: obs['chatcell_cell_type'] + probability")
    _add_reading_arguments(p)
    p.set_defaults(func=run_annotate)

    p = subparsers.add_parser("predict-drug", help="sensitive/resistant for every cell of an .h5ad")
    add_model_arguments(p)
    p.add_argument("cells", type=Path)
    p.add_argument("--drug", required=True, help="a drug the model was trained on")
    p.add_argument(
        "--allow-unknown-drug",
        action="store_true",
        help="answer for a drug the model never saw (the model cannot read it: answers are unreliable)",
    )
    add_output_argument(p, "output .h5ad: obs['chatcell_drug_response'] + probability")
    _add_reading_arguments(p)
    p.set_defaults(func=run_predict_drug)

    p = subparsers.add_parser(
        "generate-cells",
        help="generate cells (of a type) as sentences + expression",
        description="Generate cells as sentences of the training top-N genes and their "
        "reconstructed expression. Gene-constrained by default: every cell is "
        "exactly N distinct genes of the model's vocabulary (--max-new-tokens "
        "then does not apply); with --cell-type each cell is the best of "
        "--candidates samples by the model's own annotation, its probability "
        "in obs['type_probability']; --free decodes free text.",
    )
    add_model_arguments(p)
    p.add_argument("--cell-type", help="a cell type the model knows (default: random cells)")
    p.add_argument("-n", "--n-cells", type=positive_int, default=10)
    add_output_argument(p, "output .h5ad")
    p.add_argument(
        "--free",
        action="store_true",
        help="decode free text (default: exactly N distinct genes of the model's vocabulary)",
    )
    add_candidates_argument(p, "cells of a --cell-type")
    add_decoding_arguments(p, default_mode="sample")
    p.set_defaults(func=run_generate_cells)


def _add_reading_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("reading the .h5ad (default: as in training)")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--layer")
    src.add_argument("--raw", action="store_true", default=None)
    g.add_argument("--gene-key")
    g.add_argument("--allow-non-integer", action="store_true", default=None)


def decoding_options(args: argparse.Namespace):
    """The decoding flags, checked (chatcell_jax.serve.options) before any model is loaded."""
    from chatcell_jax.serve.options import DecodingOptions

    return DecodingOptions.from_mapping(vars(args))


def _load(args):
    from chatcell_jax.serve.loading import load_generator

    return load_generator(
        args.model,
        manifest=args.manifest,
        batch_size=args.batch_size,
        max_source_length=args.max_source_length,
        devices=args.devices,
        dtype=args.dtype,
    )


def _top_k(manifest) -> int:
    from chatcell_jax.singlecell.manifest import DEFAULT_TOP_K

    return manifest.sentence_length if manifest is not None else DEFAULT_TOP_K


def run_generate(args: argparse.Namespace) -> int:
    from chatcell_jax.serve.jobs import generate_jsonl

    options = decoding_options(args)
    check_out(args, args.input)
    generator, manifest = _load(args)
    n = generate_jsonl(
        generator,
        args.input,
        args.out,
        options.generation_config(_top_k(manifest) + 16),
        seed=options.seed,
        truncate=args.truncate,
        progress=not args.no_progress,
    )
    print(f"wrote {n} answers to {args.out}")
    return 0


def _recipe(args, manifest, kind: str):
    """The training sentences' recipe of the `kind` source, for this file's layer / symbols / values."""
    return manifest.recipe(kind).for_file(
        layer=args.layer, use_raw=bool(args.raw), gene_key=args.gene_key, allow_non_integer=bool(args.allow_non_integer)
    )


def _classify_cells(args: argparse.Namespace, what: str, task: Callable) -> int:
    """annotate / predict-drug: one constrained answer per cell of args.cells into a copy at --out.
    `task(manifest)` gives (source kind of the recipe, labels, prompt of a sentence, obs column)."""
    from chatcell_jax.serve.jobs import classify_h5ad
    from chatcell_jax.serve.loading import require_manifest

    check_out(args, args.cells)
    generator, manifest = _load(args)
    manifest = require_manifest(manifest, what)
    kind, labels, make_prompt, column = task(manifest)
    summary = classify_h5ad(
        generator,
        _recipe(args, manifest, kind),
        args.cells,
        args.out,
        labels=labels,
        make_prompt=make_prompt,
        column=column,
        known_genes=manifest.genes,
        truncate=args.truncate,
        progress=not args.no_progress,
    )
    print(f"wrote {args.out}: {json.dumps(summary)}")
    return 0


def run_annotate(args: argparse.Namespace) -> int:
    from chatcell_jax.serve import prompts

    def task(manifest):
        return "cells", list(manifest.labels.cell_type), prompts.annotation_prompt, "chatcell_cell_type"

    return _classify_cells(args, "annotate", task)


def run_predict_drug(args: argparse.Namespace) -> int:
    from chatcell_jax.serve import prompts

    def task(manifest):
        check_drug(args.drug, manifest.labels.drug, args.allow_unknown_drug)
        kind = "drug" if manifest.source("drug") is not None else "cells"  # --allow-unknown-drug, cells-only model
        labels = list(manifest.labels.response) or ["resistant", "sensitive"]
        return kind, labels, lambda s: prompts.drug_prompt(s, args.drug), "chatcell_drug_response"

    return _classify_cells(args, "predict-drug", task)


def check_drug(drug: str, known: tuple[str, ...], allow_unknown: bool) -> None:
    """An unknown drug is an error: the model would answer from a prompt it cannot read."""
    if drug in known:
        return
    if not allow_unknown:
        trained = f"the model knows: {', '.join(known)}" if known else "the model was trained on no drug data"
        raise InputError(f"unknown drug {drug!r}; {trained} (--allow-unknown-drug answers anyway)")
    log.warning("drug %r is unknown to the model (it knows: %s); answers are unreliable", drug, ", ".join(known))


def run_generate_cells(args: argparse.Namespace) -> int:
    from chatcell_jax.serve.jobs import generate_cells
    from chatcell_jax.serve.loading import require_manifest

    check_candidates(args.candidates)  # before loading the model
    options = decoding_options(args)
    check_out(args)
    generator, manifest = _load(args)
    manifest = require_manifest(manifest, "generate-cells")
    summary = generate_cells(
        generator,
        manifest,
        args.out,
        n_cells=args.n_cells,
        cell_type=args.cell_type,
        cfg=options.generation_config(_top_k(manifest) + 16),
        seed=options.seed,
        progress=not args.no_progress,
        free=args.free,
        candidates=args.candidates,
    )
    print(f"wrote {args.out}: {json.dumps(summary)}")
    return 0
