"""The real cells an evaluation compares against, per source kind, loaded once.

A split's records say which cells it holds (`cell_id`) and their labels; the expression and the
real top-N sentences come from the source file (`realcells`). One pass over the file serves both the
evaluated split and a seeded sample of the train split (the baselines' training cells and the
distance reference). When the file is gone, sentences fall back to the generation records' targets
and the expression baselines are skipped, with a note in the report.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from chatcell_jax.errors import InputError
from chatcell_jax.evaluate.generation import CellSet
from chatcell_jax.evaluate.realcells import RealCells, load_real_cells
from chatcell_jax.singlecell import tasks
from chatcell_jax.singlecell.manifest import Manifest
from chatcell_jax.singlecell.records import is_gene_list

log = logging.getLogger(__name__)


def cell_key(record: dict) -> str:
    """A record's cell identity: its cell id, or its real sentence when the data has no ids."""
    return str(record.get("cell_id") or "") or "sentence:" + " ".join(str(record.get("target", "")).split())


def labelled_cells(records: Sequence[dict], kind: str) -> dict[str, str]:
    """{cell id: label} of the records of `kind` that carry a label (first label wins)."""
    cells: dict[str, str] = {}
    for record in records:
        if record.get("task") in tasks.of_kind(kind) and record.get("label") and record.get("cell_id"):
            cells.setdefault(str(record["cell_id"]), str(record["label"]))
    return cells


def sample_ids(ids: Sequence[str], limit: int, seed: int) -> list[str]:
    """At most `limit` ids, a seeded uniform sample that keeps the file order."""
    if len(ids) <= limit:
        return list(ids)
    keep = np.sort(np.random.default_rng(seed).choice(len(ids), limit, replace=False))
    return [ids[i] for i in keep]


def sentences_from_records(records: Sequence[dict]) -> CellSet:
    """Labelled real cells known only by their generation-record targets (no source file)."""
    seen: dict[str, tuple[str, str]] = {}
    for record in records:
        if record.get("task") in tasks.GENERATION and record.get("label") and is_gene_list(str(record["target"]), 1):
            seen.setdefault(cell_key(record), (str(record["label"]), str(record["target"])))
    return CellSet(list(seen), [v[0] for v in seen.values()], [v[1] for v in seen.values()])


class RealCellSets:
    """Split and train real cells of one source kind, from the file or, failing that, the records."""

    def __init__(
        self,
        manifest: Manifest,
        kind: str,
        split_records: Sequence[dict],
        train_records: Sequence[dict],
        *,
        max_train_cells: int,
        seed: int,
        path: str | Path | None = None,
    ):
        self.kind = kind
        self.split_labels = labelled_cells(split_records, kind)
        train_labels = labelled_cells(train_records, kind)
        self.train_labels = {c: train_labels[c] for c in sample_ids(list(train_labels), max_train_cells, seed)}
        self.note: str | None = None
        self.cells: RealCells | None = None
        try:
            self.cells = load_real_cells(manifest, list(self.split_labels) + list(self.train_labels), kind, path=path)
        except InputError as err:
            self.note = f"{kind} source not read, expression baselines skipped: {err}"
            log.warning("%s", self.note)
        self._fallback = (sentences_from_records(split_records), sentences_from_records(train_records))

    @property
    def has_expression(self) -> bool:
        return self.cells is not None

    def subset(self, cell_ids: Sequence[str], labels: Sequence[str]) -> CellSet:
        """The given cells (which must have been loaded) with their expression and sentences."""
        assert self.cells is not None
        rows = self.cells.rows(cell_ids)
        return CellSet(
            list(cell_ids), list(labels), [self.cells.sentences[i] for i in rows], self.cells.expression[rows]
        )

    def split(self) -> CellSet:
        if self.cells is None:
            return self._fallback[0]
        return self.subset(list(self.split_labels), list(self.split_labels.values()))

    def train(self) -> CellSet:
        if self.cells is None:
            return self._fallback[1]
        return self.subset(list(self.train_labels), list(self.train_labels.values()))
