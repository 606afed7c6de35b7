"""`chatcell import-hf` and `chatcell export-hf`: Hugging Face T5 directories <-> our model directories."""

from __future__ import annotations

import argparse

from chatcell_jax.atomic import check_output


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "import-hf",
        help="convert a Hugging Face T5 directory into a chatcell-jax model directory",
        description="Reads config.json, model.safetensors (or pytorch_model.bin, with torch, weights only) and "
        "the tokenizer files of a local T5 v1.0/v1.1 checkpoint.",
    )
    p.add_argument("hf_dir", help="local Hugging Face model directory")
    p.add_argument("--out", required=True, help="model directory to write (replaced atomically)")
    p.set_defaults(func=run_import)
    p = subparsers.add_parser(
        "export-hf",
        help="write a model as a Hugging Face T5 directory (T5ForConditionalGeneration)",
        description="Writes config.json, model.safetensors (vocabulary padding removed), generation_config.json "
        "and the tokenizer files.",
    )
    p.add_argument("model", help="our model directory, or a Hugging Face directory")
    p.add_argument("--out", required=True, help="Hugging Face directory to write (replaced atomically)")
    p.set_defaults(func=run_export)


def run_import(args: argparse.Namespace) -> int:
    from chatcell_jax.hf.convert import import_hf

    check_output(args.out, overwrite=True, inputs=(args.hf_dir,), kind="directory")
    import_hf(args.hf_dir, args.out)
    return 0


def run_export(args: argparse.Namespace) -> int:
    from chatcell_jax.hf.convert import export_hf

    check_output(args.out, overwrite=True, inputs=(args.model,), kind="directory")
    export_hf(args.model, args.out)
    return 0
