"""Instruction datasets: cells of an `.h5ad` -> the four ChatCell tasks as JSONL splits + manifest.

Two passes over the matrix, each streamed in row chunks:
1. statistics: value checks, genes per cell, cells per gene (for the optional QC filters), totals;
2. sentences: filter, normalise, rank (see `cells`), fit the inverse transform, render instructions
   and append them to the split files.
Splits are decided per cell between the passes, so no cell can appear in two splits. All output is
written into a hidden temporary directory next to `out_dir` and renamed into place at the end: a
failed run leaves nothing that looks like a finished dataset.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from chatcell_jax.atomic import atomic_dir
from chatcell_jax.errors import InputError
from chatcell_jax.singlecell import cells, templates
from chatcell_jax.singlecell import manifest as manifest_lib
from chatcell_jax.singlecell import tasks as task_registry
from chatcell_jax.singlecell.h5ad import H5adFile, MatrixSpec
from chatcell_jax.singlecell.inverse import InverseFitAccumulator
from chatcell_jax.singlecell.records import SPLITS, write_jsonl_line
from chatcell_jax.singlecell.stream import RankedCells, SentenceStream, gene_symbols

log = logging.getLogger(__name__)

RESPONSES = ("resistant", "sensitive")


@dataclass
class SourceOptions:
    """How to read one `.h5ad` and turn its cells into sentences."""

    layer: str | None = None
    use_raw: bool = False
    gene_key: str | None = None
    target_total: float | str = 1e4  # a number, or "median" (median library size after QC)
    min_genes: int = 0  # QC: drop cells with fewer expressed genes (Cell2Sentence used 200)
    min_cells: int = 0  # QC: drop genes expressed in fewer cells (Cell2Sentence used 3)
    allow_non_integer: bool = False
    chunk_size: int = 2048


@dataclass
class DrugOptions:
    """The drug-response task: obs[response_key] mapped to sensitive/resistant."""

    drug: str
    response_key: str
    response_map: dict[str, str] = field(default_factory=dict)
    # "raw": rank the stored values (e.g. TPM) as they are, no QC, as ChatCell did;
    # "normalized": the same QC/normalisation checks as the cell tasks.
    values: str = "raw"


@dataclass
class PrepareOptions:
    label_key: str | None = "cell_type"
    tasks: tuple[str, ...] = task_registry.of_kind("cells")
    mode: str = "one"  # "one": one task per cell (ChatCell); "all": every task for every cell
    top_k: int = 100
    seed: int = 42
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    stratify: bool = False
    # Training-split augmentation: `augment` extra copies of every training cell, each a binomial
    # thinning of its counts (the cell as if sequenced to a fraction U(augment_min_depth, 1) of
    # its depth), ranked and rendered like the original. Validation and test cells are never
    # augmented, and the inverse transform is fitted on the original cells only.
    augment: int = 0
    augment_min_depth: float = 0.5
    source: SourceOptions = field(default_factory=SourceOptions)

    def validate(self) -> None:
        unknown = set(self.tasks) - set(task_registry.NAMES)
        if unknown:
            raise InputError(f"unknown task(s) {sorted(unknown)}; choose from {list(task_registry.NAMES)}")
        if self.mode not in ("one", "all"):
            raise InputError(f"--mode must be 'one' or 'all', not {self.mode!r}")
        if self.top_k < 1:
            raise InputError(f"--top-k must be at least 1, not {self.top_k}")
        if len(self.split_fractions) != 3 or min(self.split_fractions) < 0 or abs(sum(self.split_fractions) - 1) > 1e-6:
            raise InputError(
                f"split fractions must be three non-negative numbers summing to 1, not {self.split_fractions}"
            )
        if self.augment < 0:
            raise InputError(f"--augment must be 0 or more copies, not {self.augment}")
        if not 0 < self.augment_min_depth <= 1:
            raise InputError(f"--augment-min-depth must be in (0, 1], not {self.augment_min_depth}")
        if self.augment and self.source.allow_non_integer:
            raise InputError("--augment thins raw counts; it cannot be combined with --allow-non-integer")
        total = self.source.target_total
        if not (total == "median" or (isinstance(total, (int, float)) and total > 0)):
            raise InputError(f"--target-total must be a positive number or 'median', not {total!r}")


def demo_data_path() -> Path:
    """The bundled PBMC counts (700 cells, 10 types; see demo_data/PROVENANCE.md)."""
    return Path(str(resources.files("chatcell_jax") / "demo_data" / "pbmc68k_counts.h5ad"))


# --- pass 1: statistics ----------------------------------------------------------------------------


@dataclass
class SourceStats:
    genes_per_cell: np.ndarray
    cells_per_gene: np.ndarray
    totals: np.ndarray


def _scan_statistics(h5: H5adFile, opts: SourceOptions, require_integers: bool, progress: bool) -> SourceStats:
    genes_per_cell = np.zeros(h5.n_cells, np.int64)
    totals = np.zeros(h5.n_cells, np.float64)
    cells_per_gene = np.zeros(h5.n_genes, np.int64)
    chunks = _with_progress(h5.iter_chunks(opts.chunk_size), h5, "checking", progress, lambda part: part[1].shape[0])
    for start, chunk in chunks:
        chunk.eliminate_zeros()
        cells.check_values(chunk, start, require_integers=require_integers)
        per_cell = cells.genes_per_cell(chunk)
        genes_per_cell[start : start + chunk.shape[0]] = per_cell
        totals[start : start + chunk.shape[0]] = np.asarray(chunk.sum(axis=1)).ravel()
        passing = np.repeat(per_cell >= max(opts.min_genes, 1), per_cell)
        cells_per_gene += np.bincount(chunk.indices[passing], minlength=h5.n_genes)
    return SourceStats(genes_per_cell, cells_per_gene, totals)


def _with_progress(parts: Iterable, h5: H5adFile, what: str, progress: bool, cells_of: Callable[[Any], int]):
    """`parts` as they come, under a progress bar over the file's cells advanced by `cells_of(part)`."""
    desc = f"{what} {h5.path.name}"
    with tqdm(total=h5.n_cells, unit="cells", desc=desc, disable=not progress, smoothing=0.1) as bar:
        for part in parts:
            yield part
            bar.update(cells_of(part))


# --- splits -----------------------------------------------------------------------------------------


def assign_splits(
    keep: np.ndarray, seed: int, fractions: tuple[float, float, float], strata: np.ndarray | None = None
) -> np.ndarray:
    """Split index (0 train, 1 valid, 2 test, -1 dropped) per cell; seeded, optionally stratified."""
    split = np.full(len(keep), -1, np.int8)
    rng = np.random.default_rng(seed)
    groups = (
        [np.flatnonzero(keep)]
        if strata is None
        else [np.flatnonzero(keep & (strata == value)) for value in pd.unique(strata[keep])]
    )
    for members in groups:
        members = rng.permutation(members)
        bounds = np.round(np.cumsum(fractions)[:2] * len(members)).astype(int)
        for index, part in enumerate(np.split(members, bounds)):
            split[part] = index
    return split


# --- choices that must not depend on chunking -------------------------------------------------------


def _hashed(seed: int, salt: int, cell_index: np.ndarray) -> list[int]:
    """A seeded uint32 per cell and purpose (`salt`), as Python ints for cheap modulo."""
    return cells.tie_break_keys(seed, cell_index, np.full(len(cell_index), salt, np.int64)).tolist()


@dataclass(frozen=True)
class CellChoices:
    """Which task (mode "one") and which phrasing each cell of a chunk gets."""

    task_key: list[int]
    phrasing_keys: dict[str, list[int]]

    @classmethod
    def for_cells(cls, seed: int, cell_index: np.ndarray, tasks: tuple[str, ...]) -> CellChoices:
        return cls(
            _hashed(seed, 1, cell_index),
            {task: _hashed(seed, 2 + task_registry.NAMES.index(task), cell_index) for task in tasks},
        )


# --- pass 2: sentences and instructions ------------------------------------------------------------


@dataclass
class Source:
    """One input file and what it contributes."""

    path: Path
    options: SourceOptions
    tasks: tuple[str, ...]
    label_key: str | None = None
    drug: DrugOptions | None = None


class DatasetWriter:
    """Renders records into the three split files and keeps every count the manifest reports."""

    def __init__(self, directory: Path, options: PrepareOptions):
        self.options = options
        self.handles = {name: (directory / f"{name}.jsonl").open("w", encoding="utf-8") for name in SPLITS}
        self.counts: dict[str, Counter] = {name: Counter() for name in SPLITS}
        self.gene_counts: Counter = Counter()
        self.cells_per_split: Counter = Counter()
        self.augmented_cells = 0

    def close(self) -> None:
        for handle in self.handles.values():
            handle.close()

    def write(self, split: int, record: dict) -> None:
        name = SPLITS[split]
        write_jsonl_line(self.handles[name], record)
        self.counts[name][record["task"]] += 1


def _tasks_for_cell(source: Source, mode: str, label: str | None, task_key: int) -> list[str]:
    tasks = [t for t in source.tasks if label is not None or t not in task_registry.LABELLED]
    if mode == "one" and tasks:
        return [tasks[task_key % len(tasks)]]
    return tasks


def _instruction(task: str, phrasing: int, sentence: list[str], label: str | None, drug: str) -> tuple[str, str]:
    """(source, target) of one record: a phrasing takes the fields it names; the answer is the
    sentence or the label, as the task registry says."""
    genes = " ".join(sentence)
    source = templates.render(task, phrasing, n=len(sentence), genes=genes, cell_type=label or "", drug=drug)
    return source, genes if task_registry.get(task).generates_genes else label


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _labels(h5: H5adFile, source: Source) -> tuple[np.ndarray | None, int]:
    """Per-cell label (None where missing) and the number of missing labels."""
    if source.drug is not None:
        return _drug_responses(h5, source.drug), 0
    if source.label_key is None:
        return None, 0
    if not set(source.tasks) & set(task_registry.LABELLED):
        return None, 0
    column = h5.obs_column(source.label_key)
    values = column.astype(str).str.strip().to_numpy(dtype=object)
    missing = column.isna().to_numpy() | (values == "")  # an empty label is a missing one, counted as such
    values[missing] = None
    bad = next((v for v in values if v is not None and _CONTROL.search(v)), None)
    if bad is not None:
        raise InputError(
            f"{h5.path}: the label {bad!r} of obs[{source.label_key!r}] holds a line break or control character, "
            "which an answer cannot spell; clean the column"
        )
    return values, int(missing.sum())


def _drug_responses(h5: H5adFile, drug: DrugOptions) -> np.ndarray:
    raw = h5.obs_column(drug.response_key).astype(str).str.strip()
    mapping = {k.lower(): v.lower() for k, v in drug.response_map.items()}
    mapped = raw.str.lower().map(lambda v: mapping.get(v, v if v in RESPONSES else None))
    unmapped = sorted(set(raw[mapped.isna()]))
    if unmapped:
        raise InputError(
            f"obs[{drug.response_key!r}] has values {unmapped[:10]} that are neither sensitive nor resistant; "
            f"map them with --response-map, e.g. --response-map {unmapped[0]}=sensitive"
        )
    bad = sorted(set(mapped) - set(RESPONSES))
    if bad:
        raise InputError(f"--response-map may only map to sensitive or resistant, not {bad}")
    return mapped.to_numpy(dtype=object)


@dataclass(frozen=True)
class SourceResult:
    """What one file contributes to the manifest."""

    source: manifest_lib.Source
    genes: list[str]  # the file's genes left after the gene filter
    labels: list[str]  # its cell types (sorted)


def _process_source(source: Source, writer: DatasetWriter, progress: bool) -> SourceResult:
    """Both passes over one file."""
    opts, popts = source.options, writer.options
    started = time.perf_counter()
    raw_drug = source.drug is not None and source.drug.values == "raw"
    with H5adFile(source.path, MatrixSpec(opts.layer, opts.use_raw)) as h5:
        labels, missing_labels = _labels(h5, source)
        cell_ids = h5.cell_ids()
        require_integers = not (opts.allow_non_integer or raw_drug)
        stats = _scan_statistics(h5, opts, require_integers, progress)

        min_genes = 0 if raw_drug else opts.min_genes
        min_cells = 0 if raw_drug else opts.min_cells
        keep_genes = stats.cells_per_gene >= min_cells if min_cells > 0 else None
        empty = stats.genes_per_cell == 0
        keep_cells = ~empty & (stats.genes_per_cell >= min_genes)
        if not keep_cells.any():
            raise InputError(
                f"{source.path}: no cells left after filtering (empty cells: {int(empty.sum())}, "
                f"below --min-genes {min_genes}: {int((~empty & ~keep_cells).sum())}); relax the filters"
            )
        target_total = _target_total(h5, opts, keep_cells, keep_genes, stats)
        strata = labels if popts.stratify and labels is not None else None
        split = assign_splits(keep_cells, popts.seed, popts.split_fractions, _strata(strata))

        symbols, renamed = gene_symbols(h5, opts.gene_key)
        if renamed:
            log.warning(
                "%s: %d duplicated gene symbols made unique (SYMBOL-1, SYMBOL-2, ...)", source.path.name, renamed
            )
        recipe = manifest_lib.SentenceRecipe(
            top_k=popts.top_k,
            seed=popts.seed,
            target_total=target_total,
            layer=opts.layer,
            use_raw=opts.use_raw,
            gene_key=opts.gene_key,
            require_integers=require_integers,
            dropped_genes=() if keep_genes is None else tuple(sorted(symbols[~keep_genes].tolist())),
        )
        stream = SentenceStream(h5, recipe)
        fit = InverseFitAccumulator(seed=popts.seed)
        emptied, augmented_before = 0, writer.augmented_cells
        parts = stream.chunks(opts.chunk_size, check=False)  # values were checked in pass 1
        for part in _with_progress(parts, h5, "sentences", progress, lambda part: part.counts.shape[0]):
            fit.add(part.ranked.ranks(), part.ranked.values)
            versions = [part.ranked]
            if source.drug is None:  # drug data are ranked as stored, never thinned
                versions += _thinned_versions(popts, stream, part, split)
            emptied += _write_chunk(writer, source, stream, versions, part.start, split, labels, cell_ids)
        elapsed = time.perf_counter() - started
    stats_out = {
        "matrix": recipe.matrix.path,
        "cells_in_file": int(h5.n_cells),
        "cells_dropped_no_counts": int(empty.sum()),
        "cells_dropped_min_genes": int((~empty & ~keep_cells).sum()),
        "cells_dropped_no_counts_after_gene_filter": emptied,
        "cells_missing_label": missing_labels,
        "augmented_cells": writer.augmented_cells - augmented_before,
        "genes_in_file": int(h5.n_genes),
        "genes_dropped_min_cells": len(recipe.dropped_genes),
        "duplicate_symbols_renamed": renamed,
        "seconds": round(elapsed, 3),
    }
    _log_drops(source, stats_out)
    kept = stream.symbols if stream.keep_genes is None else stream.symbols[stream.keep_genes]
    entry = manifest_lib.Source(
        str(Path(source.path).resolve()), "drug" if source.drug else "cells", recipe, fit.result(), stats_out
    )
    return SourceResult(entry, kept.tolist(), sorted({l for l in (labels if labels is not None else []) if l}))


def _thinned_versions(
    popts: PrepareOptions, stream: SentenceStream, part: RankedCells, split: np.ndarray
) -> list[cells.RankedChunk]:
    """The `augment` thinned copies of the chunk's training cells, ranked (other cells left empty).

    Each copy has its own thinning and tie-break seed; its records keep the cell's id (same cell,
    same split).
    """
    in_train = split[part.start : part.start + part.counts.shape[0]] == 0
    return [
        stream.rank(
            cells.thin_counts(part.counts, part.start, popts.seed, copy, popts.augment_min_depth, rows=in_train),
            part.start,
            seed_offset=copy,
        )
        for copy in range(1, popts.augment + 1)
    ]


def _write_chunk(
    writer: DatasetWriter,
    source: Source,
    stream: SentenceStream,
    versions: list[cells.RankedChunk],
    start: int,
    split: np.ndarray,
    labels: np.ndarray | None,
    cell_ids: np.ndarray,
) -> int:
    """Records for the cells of one chunk; returns how many kept cells had no genes left.

    `versions[0]` is the chunk itself, the rest its augmented copies: a training cell's copies follow
    it, so the files do not depend on the chunk size. Copy c draws its phrasings with seed + c.
    """
    opts = writer.options
    n_cells = versions[0].n_cells
    choices = [
        CellChoices.for_cells(opts.seed + copy, start + np.arange(n_cells), source.tasks)
        for copy in range(len(versions))
    ]
    drug_name = source.drug.drug if source.drug else ""
    emptied = 0
    for i in range(n_cells):
        part = int(split[start + i])
        if part < 0:
            continue
        label = labels[start + i] if labels is not None else None
        for copy, ranked in enumerate(versions if part == 0 else versions[:1]):
            sentence = stream.sentence(ranked, i)
            if not sentence:
                emptied += copy == 0
                continue
            writer.gene_counts.update(sentence)
            if copy:
                writer.augmented_cells += 1
            else:
                writer.cells_per_split[SPLITS[part]] += 1
            for task in _tasks_for_cell(source, opts.mode, label, choices[copy].task_key[i]):
                text, target = _instruction(task, choices[copy].phrasing_keys[task][i], sentence, label, drug_name)
                writer.write(
                    part,
                    {
                        "source": text,
                        "target": target,
                        "task": task,
                        "cell_id": str(cell_ids[start + i]),
                        "label": label or "",
                    },
                )
    return emptied


def _strata(labels: np.ndarray | None) -> np.ndarray | None:
    if labels is None:
        return None
    return np.array(["\0missing" if l is None else l for l in labels], dtype=object)


def _target_total(h5: H5adFile, opts: SourceOptions, keep_cells: np.ndarray, keep_genes, stats: SourceStats) -> float:
    if opts.target_total != "median":
        return float(opts.target_total)
    totals = stats.totals
    if keep_genes is not None:  # library sizes after the gene filter need one more pass
        totals = np.zeros(h5.n_cells)
        for start, chunk in h5.iter_chunks(opts.chunk_size):
            restricted = cells.restrict_genes(chunk, keep_genes)
            totals[start : start + chunk.shape[0]] = np.asarray(restricted.sum(axis=1)).ravel()
    median = float(np.median(totals[keep_cells]))
    log.info("median library size (target total): %.1f", median)
    return median


def _log_drops(source: Source, section: dict) -> None:
    for key in (
        "cells_dropped_no_counts",
        "cells_dropped_min_genes",
        "cells_dropped_no_counts_after_gene_filter",
        "cells_missing_label",
        "genes_dropped_min_cells",
    ):
        if section[key]:
            log.warning("%s: %s = %d", source.path.name, key, section[key])


# --- the whole dataset -----------------------------------------------------------------------------


def prepare_dataset(
    out_dir: str | Path,
    *,
    cells_input: str | Path | None = None,
    drug_input: str | Path | None = None,
    options: PrepareOptions | None = None,
    drug: DrugOptions | None = None,
    drug_source_options: SourceOptions | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> manifest_lib.Manifest:
    """Build `train/valid/test.jsonl` + `manifest.json` in `out_dir`; returns the manifest.

    `cells_input` gives the random/pseudo-cell generation and annotation tasks; `drug_input` (with
    `drug`) the drug-sensitivity task. Either or both.
    """
    options = options or PrepareOptions()
    options.validate()
    sources = _sources(cells_input, drug_input, options, drug, drug_source_options)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        manifest = _write_dataset(tmp, sources, options, drug, progress)
    log.info("wrote %s: %s", out_dir, manifest.counts["total"])
    return manifest


def _sources(cells_input, drug_input, options: PrepareOptions, drug, drug_source_options) -> list[Source]:
    sources = []
    cell_tasks = tuple(t for t in options.tasks if t in task_registry.of_kind("cells"))
    if cells_input is not None and cell_tasks:
        sources.append(Source(Path(cells_input), options.source, cell_tasks, options.label_key))
    if drug_input is not None:
        if drug is None:
            raise InputError("a drug input needs --drug NAME and --response-key KEY")
        sources.append(
            Source(Path(drug_input), drug_source_options or SourceOptions(), task_registry.of_kind("drug"), drug=drug)
        )
    if not sources:
        raise InputError("nothing to prepare: give an input .h5ad (and --drug/--response-key for the drug task)")
    return sources


def _write_dataset(
    directory: Path, sources: list[Source], options: PrepareOptions, drug, progress: bool
) -> manifest_lib.Manifest:
    writer = DatasetWriter(directory, options)
    try:
        results = [_process_source(source, writer, progress) for source in sources]
    finally:
        writer.close()
    manifest = _manifest(results, writer, options, drug)
    total = sum(sum(c.values()) for c in writer.counts.values())
    if total == 0:
        raise InputError("no instructions were produced (no labelled or expressed cells?)")
    manifest.write(directory)
    return manifest


def _manifest(
    results: list[SourceResult], writer: DatasetWriter, options: PrepareOptions, drug
) -> manifest_lib.Manifest:
    genes = sorted(writer.gene_counts.items(), key=lambda item: (-item[1], item[0]))
    cell_results = [r for r in results if r.source.kind == "cells"]
    has_drug = drug is not None and any(r.source.kind == "drug" for r in results)
    counts = {name: dict(sorted(c.items())) for name, c in writer.counts.items()}
    counts["total"] = {name: sum(c.values()) for name, c in writer.counts.items()}
    # as JSON has them (lists, not tuples), so a written manifest reads back equal
    options_dict = json.loads(json.dumps({**asdict(options), "drug": asdict(drug) if drug else None}))
    return manifest_lib.Manifest(
        sources=tuple(r.source for r in results),
        labels=manifest_lib.Labels(
            cell_type=tuple(sorted({label for r in cell_results for label in r.labels})),
            drug=(drug.drug,) if has_drug else (),
            response=RESPONSES if has_drug else (),
        ),
        genes=dict(genes),
        dataset_genes=tuple(sorted({g for r in results for g in r.genes})),
        counts=counts,
        top_k=options.top_k,
        cells_per_split=dict(writer.cells_per_split),
        inverse_fit=(cell_results or results)[0].source.inverse_fit,
        options=options_dict,
    )
