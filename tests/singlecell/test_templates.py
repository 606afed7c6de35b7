"""Templates: enough phrasings, every one renders, articles are right, N is carried."""

import re

import pytest

from chatcell_jax.singlecell import tasks, templates


def test_phrasing_counts():
    assert len(templates.RANDOM_GENERATION) >= 20
    assert len(templates.PSEUDO_CELL_GENERATION) >= 20
    assert len(templates.ANNOTATION_OPENINGS) >= 20 and len(templates.ANNOTATION_CLOSINGS) >= 10
    assert len(templates.DRUG_SENSITIVITY) >= 15
    for phrasings in (
        templates.RANDOM_GENERATION,
        templates.PSEUDO_CELL_GENERATION,
        templates.DRUG_SENSITIVITY,
        templates.ANNOTATION_OPENINGS,
    ):
        assert len(set(phrasings)) == len(phrasings)


@pytest.mark.parametrize("task", tasks.NAMES)
def test_every_phrasing_renders_with_its_fields(task):
    for choice in range(templates.n_phrasings(task)):
        text = templates.render(task, choice, n=37, genes="AAA BBB", cell_type="NK cell", drug="Erlotinib")
        assert "{" not in text and "}" not in text
        assert re.search(r"\b37\b", text), text  # N carried, never a hard-coded 100
        assert "100" not in text
        if task in ("annotation", "drug_sensitivity"):
            assert "AAA BBB" in text
        if task == "pseudo_cell_generation":
            assert "NK cell" in text
        if task == "drug_sensitivity":
            assert "Erlotinib" in text


@pytest.mark.parametrize(
    "label, article",
    [
        ("NK cell", "an"),
        ("CD14+ Monocyte", "a"),
        ("B cell", "a"),
        ("Endothelial cell", "an"),
        ("HSC", "an"),
        ("T cell", "a"),
        ("Unipotent progenitor", "a"),
        ("Inner root sheath", "an"),
        ("CD4+/CD25 T Reg", "a"),
        ("Fibroblast", "a"),
        ("MSC", "an"),
        ("hour cell", "an"),
        ("Ameloblast", "an"),
    ],
)
def test_indefinite_article(label, article):
    assert templates.indefinite_article(label) == article


def test_the_registry_declares_each_task_once_and_completely():
    from dataclasses import fields

    from chatcell_jax.singlecell.manifest import KINDS, Labels

    label_sets = {f.name for f in fields(Labels)}
    # the order is part of the data format (phrasing choices are salted by position)
    assert tasks.NAMES == ("random_generation", "pseudo_cell_generation", "annotation", "drug_sensitivity")
    for task in tasks.REGISTRY:
        assert templates.n_phrasings(task.name) >= 10 and task.title and task.source_kind in KINDS
        assert task.generates_genes != task.classifies
        assert (task.label_set in label_sets) if task.classifies else task.label_set is None
    assert set(tasks.GENERATION) | set(tasks.CLASSIFICATION) == set(tasks.NAMES)
    assert tasks.of_kind("drug") == ("drug_sensitivity",) and tasks.label_sets()["annotation"] == "cell_type"
    with pytest.raises(ValueError, match="unknown task 'dance'"):
        tasks.get("dance")
