"""Scoring generated cells: random generation (sentence checks) and pseudo-cells (k-NN, distances).

Pseudo-cell set-up (see `neighbours` for the k-NN definitions):

- *Generated* cells: the model's answers to the split's pseudo-cell records, requested type = the
  record's label. For expression space the answer is cut to the first N words (N = the data set's
  top-N, as ChatCell cuts to 100) and mapped back with the inverse transform; unknown words drop.
- *Real reference* for k-NN: every labelled real cell of the same split, represented like the
  generated ones (its own top-N sentence; reconstructed for expression space). ChatCell used the
  split's pseudo-cell targets; ours is a superset with the same distribution, which keeps K = 25
  and 50 meaningful on small splits. Without the source file it falls back to the split's
  generation-record targets.
- Baselines in the same spaces: `real_sentences` scores the real cells the pseudo-cell records were
  built from (the ceiling for a model that reproduces real sentences; the cell itself is removed
  from the reference), and `real_expression` scores the same cells by their full normalised
  expression against the split's real cells (how separable the types are before any sentence).
- Distribution distances use the *train* split's real cells as reference (disjoint from both the
  generated and the held-out real cells), in a 10-component PCA of reconstructed expression.
- Gene-constrained answers (exactly N distinct genes of the model's vocabulary), when given, are
  scored exactly like the free ones, as the system `model_constrained`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from chatcell_jax.evaluate import distributions, neighbours
from chatcell_jax.evaluate.metrics import sentence_metrics
from chatcell_jax.singlecell.inverse import InverseFit, reconstruct_expression

log = logging.getLogger(__name__)

PCA_COMPONENTS = 10


@dataclass
class CellSet:
    """Real cells as the generation metrics need them; `expression` is None without the source file."""

    cell_ids: list[str]
    labels: list[str]
    sentences: list[str]
    expression: sp.csr_matrix | None = None

    def __len__(self) -> int:
        return len(self.cell_ids)


@dataclass
class Space:
    """How sentences become points: the gene vocabulary, the inverse fit and N."""

    genes: list[str]
    fit: InverseFit
    top_k: int

    def reconstruct(self, sentences: Sequence[str]) -> np.ndarray:
        """Dense [n, len(genes)] log10 expression from the first N words of each sentence."""
        index = {g: i for i, g in enumerate(self.genes)}
        rows = [reconstruct_expression(s.split()[: self.top_k], index, self.fit)[0] for s in sentences]
        return np.vstack(rows) if rows else np.zeros((0, len(self.genes)), np.float32)

    def restricted(self, *sentence_sets: Sequence[str]) -> Space:
        """The same space over only the genes these sentences name.

        Every other gene is 0 in every reconstructed cell, so Euclidean distances and a PCA fitted
        on these cells are unchanged, while the dense matrices shrink from the whole vocabulary
        (tens of thousands of genes) to the few thousand that occur in top-N sentences.
        """
        vocabulary = set(self.genes)
        named = {w for sentences in sentence_sets for s in sentences for w in s.upper().split()[: self.top_k]}
        return Space(sorted(named & vocabulary), self.fit, self.top_k)


def random_generation(
    outputs: Sequence[str],
    real_targets: Sequence[str],
    genes: Sequence[str],
    top_k: int,
    constrained: Sequence[str] | None = None,
) -> dict:
    """Model metrics (free, and gene-constrained when given) and the `real_sentences` baseline (the
    split's own random-generation targets)."""
    result = {"model": sentence_metrics(outputs, genes, top_k), "n_genes_requested": top_k}
    if constrained is not None:
        result["model_constrained"] = sentence_metrics(constrained, genes, top_k)
    if real_targets:
        result["baselines"] = {"real_sentences": sentence_metrics(real_targets, genes, top_k)}
    return result


def knn_in_space(
    to_reference: np.ndarray,
    among: np.ndarray,
    query_labels: Sequence[str],
    reference: CellSet,
    query_ids: Sequence[str] | None = None,
) -> dict:
    """`neighbours.knn_table`, removing a query's own cell from the reference when `query_ids` given."""
    exclude = None
    if query_ids is not None:
        exclude = np.asarray(query_ids, dtype=object)[:, None] == np.asarray(reference.cell_ids, dtype=object)[None, :]
    return neighbours.knn_table(to_reference, reference.labels, among, query_labels, exclude)


def pseudo_cells(
    outputs: Sequence[str],
    requested: Sequence[str],
    own: CellSet,
    reference: CellSet,
    train: CellSet | None,
    space: Space,
    workers: int = 1,
    constrained: Sequence[str] | None = None,
) -> tuple[dict, dict]:
    """Metrics of the pseudo-cell task and the points for the PCA figure (the free answers'): the
    sentence checks of random generation per system (`model`, `model_constrained`), k-NN tables
    and distribution distances.

    `own`: the real cells the pseudo-cell records were built from (same order as `outputs`);
    `reference`: the split's labelled real cells; `train`: the train split's (for distances);
    `constrained`: gene-constrained answers to the same records, scored as `model_constrained`.
    """
    requested = [str(r) for r in requested]
    unknown = _unknown_words(outputs, space)
    answers = {"model": outputs} | ({} if constrained is None else {"model_constrained": constrained})
    sentences = {name: sentence_metrics(texts, space.genes, space.top_k) for name, texts in answers.items()}
    space = space.restricted(*answers.values(), own.sentences, reference.sentences, train.sentences if train else [])
    generated = {name: space.reconstruct(sentences) for name, sentences in answers.items()}
    own_points, ref_points = space.reconstruct(own.sentences), space.reconstruct(reference.sentences)
    euclid, lev = neighbours.euclidean_distances, neighbours.levenshtein_distances
    expression = {
        name: knn_in_space(euclid(points, ref_points), euclid(points, points), requested, reference)
        for name, points in generated.items()
    }
    expression["real_sentences"] = knn_in_space(
        euclid(own_points, ref_points), euclid(own_points, own_points), own.labels, reference, own.cell_ids
    )
    if own.expression is not None and reference.expression is not None:
        a, b = own.expression, reference.expression
        expression["real_expression"] = knn_in_space(
            sparse_euclidean(a, b), sparse_euclidean(a, a), own.labels, reference, own.cell_ids
        )
    levenshtein = {
        name: knn_in_space(
            lev(sentences, reference.sentences, workers), lev(sentences, sentences, workers), requested, reference
        )
        for name, sentences in answers.items()
    }
    levenshtein["real_sentences"] = knn_in_space(
        lev(own.sentences, reference.sentences, workers),
        lev(own.sentences, own.sentences, workers),
        own.labels,
        reference,
        own.cell_ids,
    )
    result = {
        "n": len(outputs),
        **sentences,
        "knn": {"expression": expression, "levenshtein": levenshtein},
        "unknown_words_per_cell": unknown,
    }
    figure = {}
    if train is not None and len(train) >= 2:
        result["distances"], figure = _distances(generated, requested, own_points, own.labels, train, space)
    return result, figure


def sparse_euclidean(a: sp.csr_matrix, b: sp.csr_matrix) -> np.ndarray:
    """Euclidean distances between sparse rows without densifying the gene axis."""
    from sklearn.metrics.pairwise import euclidean_distances

    return euclidean_distances(a, b)


def _unknown_words(outputs: Sequence[str], space: Space) -> float:
    genes = set(space.genes)
    words = [s.upper().split()[: space.top_k] for s in outputs]
    return float(np.mean([sum(w not in genes for w in ws) for ws in words])) if words else 0.0


def _distances(
    generated: dict[str, np.ndarray],
    requested: Sequence[str],
    own_points: np.ndarray,
    own_labels: Sequence[str],
    train: CellSet,
    space: Space,
) -> tuple[dict, dict]:
    """Per-type MMD / Frechet against the train cells of each model system (`generated`: points
    by system name) and of the held-out real cells; figure points of the free model's cells."""
    train_points = space.reconstruct(train.sentences)
    projection = distributions.Projection.fit(train_points, PCA_COMPONENTS)
    ref = projection.transform(train_points)
    ref_types = np.asarray(train.labels, dtype=object)
    gamma = distributions.median_gamma(ref)
    candidates = {name: (points, requested) for name, points in generated.items()}
    candidates["real_sentences"] = (own_points, own_labels)
    result = {
        "reference": "train split, reconstructed from top-N sentences",
        "pca_components": len(projection.components),
        "gamma": gamma,
    }
    for name, (points, types) in candidates.items():
        result[name] = distributions.per_type_distances(
            projection.transform(points), np.asarray(types, dtype=object), ref, ref_types, gamma
        )
    figure = {
        "reference": ref[:, :2],
        "reference_types": ref_types,
        "generated": projection.transform(generated["model"])[:, :2],
        "generated_types": np.asarray(requested, dtype=object),
        "explained": projection.explained_variance_ratio[:2].tolist(),
    }
    return result, figure
