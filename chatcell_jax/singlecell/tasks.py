"""The task registry: each of ChatCell's four tasks declared once.

Everything that differs between tasks is a field here, and the rest of the code asks the registry
instead of naming tasks: which cells make a record (`source_kind`, `needs_label`), what the answer is
(`answer`: a gene list or one label of `label_set`), and with that how it is decoded by default
(gene-constrained generation, or labels scored as whole answers), which metrics score it
(generation metrics or classification metrics) and where its instructions come from
(`templates.render(name, ...)`). A fifth task is one more `Task` here plus its phrasings in
`templates`.
"""

from __future__ import annotations

from dataclasses import dataclass

GENES, LABEL = "genes", "label"  # the two kinds of answer


@dataclass(frozen=True)
class Task:
    name: str
    answer: str  # GENES: a cell sentence; LABEL: one of the manifest's `label_set`
    source_kind: str  # the manifest source whose cells make its records: "cells" or "drug"
    needs_label: bool  # a cell without a label makes no record (its label is in the prompt or the answer)
    label_set: str | None = None  # for LABEL answers: the manifest label set ("cell_type", "response")
    title: str = ""  # as the evaluation report names it

    @property
    def generates_genes(self) -> bool:
        return self.answer == GENES

    @property
    def classifies(self) -> bool:
        return self.answer == LABEL


REGISTRY: tuple[Task, ...] = (
    # the order is part of the data format: prepare's seeded phrasing choice is salted by position
    Task("random_generation", GENES, "cells", needs_label=False, title="Random cell generation"),
    Task("pseudo_cell_generation", GENES, "cells", needs_label=True, title="Pseudo-cell generation"),
    Task("annotation", LABEL, "cells", needs_label=True, label_set="cell_type", title="Cell type annotation"),
    Task("drug_sensitivity", LABEL, "drug", needs_label=True, label_set="response", title="Drug sensitivity"),
)
TASKS: dict[str, Task] = {task.name: task for task in REGISTRY}
NAMES: tuple[str, ...] = tuple(TASKS)
GENERATION: tuple[str, ...] = tuple(t.name for t in REGISTRY if t.generates_genes)
CLASSIFICATION: tuple[str, ...] = tuple(t.name for t in REGISTRY if t.classifies)
LABELLED: tuple[str, ...] = tuple(t.name for t in REGISTRY if t.needs_label)


def get(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; the tasks are {list(NAMES)}") from None


def of_kind(kind: str) -> tuple[str, ...]:
    """The tasks whose records come from a `kind` source ("cells" or "drug")."""
    return tuple(t.name for t in REGISTRY if t.source_kind == kind)


def label_sets() -> dict[str, str]:
    """{classification task: the manifest label set of its answers}."""
    return {t.name: t.label_set for t in REGISTRY if t.label_set}
