"""`chatcell tokenizer`: vocabulary adaptation (one token per gene, cell type and drug)."""

from __future__ import annotations

import argparse
from pathlib import Path

from chatcell_jax.atomic import check_output
from chatcell_jax.cli.types import positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tokenizer",
        help="build the HF tokenizer with one token per gene",
        description="Add the genes, cell types and drugs of a prepared data set to a T5-style "
        "tokenizer as whole words (trained from scratch by default).",
    )
    p.add_argument("--data", type=Path, required=True, help="prepared data directory (manifest.json, train.jsonl)")
    p.add_argument("--out", type=Path, required=True, help="output tokenizer directory (written atomically)")
    p.add_argument(
        "--base",
        help="existing T5-style tokenizer directory (or hub id when online); "
        "default: train a Unigram base on the instructions",
    )
    p.add_argument(
        "--sp-vocab-size", type=positive_int, default=8000, help="upper bound for the trained base vocabulary"
    )
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from chatcell_jax.tokenizer import build_tokenizer

    check_output(args.out, overwrite=args.overwrite, inputs=(args.data,), kind="directory")
    record = build_tokenizer(
        args.data, args.out, base=args.base, sp_vocab_size=args.sp_vocab_size, overwrite=args.overwrite
    )
    print(
        f"wrote {args.out}: {record['base_vocab_size']} base ids ({record['base']}) + {record['n_new']} whole words "
        f"({record['genes']} genes, {len(record['cell_types'])} cell type(s), {len(record['drugs'])} drug(s)); "
        f"{len(record['collisions'])} already existed"
    )
    return 0
