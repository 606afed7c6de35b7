"""`chatcell prepare`: cell sentences and instruction datasets from AnnData."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from chatcell_jax.atomic import check_output
from chatcell_jax.cli.types import nonnegative_int, positive_int
from chatcell_jax.errors import InputError
from chatcell_jax.singlecell.tasks import of_kind

CELL_TASKS = of_kind("cells")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "prepare",
        help="build train/valid/test instructions + manifest from an .h5ad",
        description="Turn cells into cell sentences and wrap them in instructions for the ChatCell tasks.",
    )
    p.add_argument("input", nargs="?", type=Path, help="input .h5ad with raw counts (cells x genes)")
    p.add_argument("--out", type=Path, required=True, help="output directory (written atomically)")
    p.add_argument("--demo", action="store_true", help="use the bundled PBMC cells (700 cells, 10 types)")
    p.add_argument(
        "--chatcell-json",
        type=Path,
        metavar="DIR",
        help="convert a published ChatCell-Instructions directory (train/valid/test.json) instead",
    )
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    g = p.add_argument_group("reading the .h5ad")
    g.add_argument("--label-key", default="cell_type", help="obs column with the cell type (default: cell_type)")
    g.add_argument("--gene-key", help="var column with gene symbols (default: var_names)")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--layer", help="take counts from this layer instead of X")
    src.add_argument("--raw", action="store_true", help="take counts (and genes) from .raw")
    g.add_argument(
        "--allow-non-integer",
        action="store_true",
        help="accept non-integer values (e.g. TPM) and rank them as they are",
    )
    g.add_argument("--chunk-size", type=positive_int, default=2048, help="cells per streamed chunk")

    g = p.add_argument_group("cell sentences")
    g.add_argument("--target-total", default="10000", help="normalise each cell to this total, or 'median'")
    g.add_argument("--min-genes", type=nonnegative_int, default=0, help="QC: drop cells with fewer expressed genes")
    g.add_argument("--min-cells", type=nonnegative_int, default=0, help="QC: drop genes expressed in fewer cells")
    g.add_argument("--top-k", type=positive_int, default=100, help="genes per sentence in the instructions")
    g.add_argument("--seed", type=nonnegative_int, default=42)

    g = p.add_argument_group("instructions")
    g.add_argument("--tasks", nargs="+", default=list(CELL_TASKS), choices=CELL_TASKS, help="cell tasks")
    g.add_argument(
        "--mode",
        choices=["one", "all"],
        default="one",
        help="one task per cell (ChatCell's way) or every task for every cell",
    )
    g.add_argument("--split", default="0.8,0.1,0.1", help="train,valid,test fractions by cell")
    g.add_argument("--stratify", action="store_true", help="stratify the splits by label")
    g.add_argument(
        "--augment",
        type=nonnegative_int,
        default=0,
        metavar="N",
        help="N extra copies of every training cell, its counts binomially thinned (default 0)",
    )
    g.add_argument(
        "--augment-min-depth",
        type=float,
        default=0.5,
        metavar="F",
        help="each copy keeps a fraction U(F, 1) of the cell's counts (default 0.5)",
    )

    g = p.add_argument_group("drug sensitivity")
    g.add_argument("--drug", help="drug name; with --response-key, makes drug-sensitivity instructions")
    g.add_argument("--response-key", help="obs column with the response")
    g.add_argument(
        "--response-map",
        default="",
        help="map response values, e.g. Holiday=sensitive,Sens=sensitive (case-insensitive)",
    )
    g.add_argument(
        "--drug-input",
        type=Path,
        help="drug cells from this .h5ad (then INPUT gives the cell tasks); default: INPUT itself",
    )
    g.add_argument(
        "--drug-values",
        choices=["raw", "normalized"],
        default="raw",
        help="raw: rank stored values (e.g. TPM) as ChatCell did; normalized: count checks + QC",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from chatcell_jax.singlecell import prepare as ins

    check_output(args.out, overwrite=args.overwrite, kind="directory")  # before reading any cell
    if args.chatcell_json:
        from chatcell_jax.singlecell.chatcell_json import convert_chatcell_instructions

        manifest = convert_chatcell_instructions(args.chatcell_json, args.out, overwrite=args.overwrite)
    else:
        options, drug, cells_input, drug_input = _options(args)
        manifest = ins.prepare_dataset(
            args.out,
            cells_input=cells_input,
            drug_input=drug_input,
            options=options,
            drug=drug,
            drug_source_options=ins.SourceOptions(allow_non_integer=args.allow_non_integer, chunk_size=args.chunk_size),
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    _print_summary(args.out, manifest)
    return 0


def _options(args: argparse.Namespace):
    from chatcell_jax.singlecell import prepare as ins

    if args.demo == (args.input is not None):
        raise InputError("give exactly one of INPUT.h5ad or --demo (or --chatcell-json DIR)")
    input_path = ins.demo_data_path() if args.demo else args.input
    source = ins.SourceOptions(
        layer=args.layer,
        use_raw=args.raw,
        gene_key=args.gene_key,
        target_total=_target_total(args.target_total),
        min_genes=args.min_genes,
        min_cells=args.min_cells,
        allow_non_integer=args.allow_non_integer,
        chunk_size=args.chunk_size,
    )
    options = ins.PrepareOptions(
        label_key=args.label_key,
        tasks=tuple(args.tasks),
        mode=args.mode,
        top_k=args.top_k,
        seed=args.seed,
        split_fractions=_fractions(args.split),
        stratify=args.stratify,
        augment=args.augment,
        augment_min_depth=args.augment_min_depth,
        source=source,
    )
    drug = None
    if args.drug or args.response_key:
        if not (args.drug and args.response_key):
            raise InputError("the drug task needs both --drug NAME and --response-key KEY")
        drug = ins.DrugOptions(args.drug, args.response_key, _mapping(args.response_map), args.drug_values)
    if drug and args.drug_input is None:
        return options, drug, None, input_path  # INPUT is the drug data set
    return options, drug, input_path, args.drug_input


def _target_total(text: str) -> float | str:
    if text == "median":
        return text
    try:
        return float(text)
    except ValueError:
        raise InputError(f"--target-total must be a number or 'median', not {text!r}") from None


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise InputError(f"--split must be three comma-separated numbers like 0.8,0.1,0.1, not {text!r}") from None
    if len(parts) != 3:
        raise InputError(f"--split must have three parts (train,valid,test), not {text!r}")
    return parts  # type: ignore[return-value]


def _mapping(text: str) -> dict[str, str]:
    mapping = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        if "=" not in item:
            raise InputError(f"--response-map entries look like VALUE=sensitive, not {item!r}")
        key, value = item.split("=", 1)
        mapping[key.strip()] = value.strip()
    return mapping


def _print_summary(out: Path, manifest) -> None:
    counts = manifest.counts
    print(f"wrote {out}")
    for split in ("train", "valid", "test"):
        print(f"  {split:5s} {counts['total'][split]:7d} records  {json.dumps(counts[split])}")
    print(f"  genes in sentences: {len(manifest.genes)}; cell types: {len(manifest.labels.cell_type)}")
    fit = manifest.inverse_fit
    if fit is None:
        print("  inverse transform: none (no expression matrix)")
        return
    print(f"  inverse transform: slope {fit.slope:.3f}, intercept {fit.intercept:.3f}, R^2 {fit.r_squared:.3f}")
