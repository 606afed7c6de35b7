"""k-NN quality and discriminability of generated cells (ChatCell's pseudo-cell metrics).

Definitions (ChatCell's `Performance_of_pseudo-cell_generation_*` evaluation, restated):

- Every generated cell g was requested as type t(g).
- **quality@K**: a K-NN classifier fitted on *real* cells with their types labels g; quality is the
  % of generated cells it labels t(g).
- **discriminability@K**: a second K-NN classifier is fitted on the *generated* cells themselves,
  labelled with their requested types, and labels every generated cell, itself included (ChatCell
  predicts on the very cells it fitted, so each cell is one of its own K neighbours at distance 0).
  Discriminability is the % of generated cells that *both* classifiers label t(g): generated cells
  must look like real cells of their type and differ from generated cells of the other types.
- **discriminability_loo@K** is our addition: the same, but the generated-cell classifier leaves the
  cell itself out, so a cell cannot vote for itself.

Votes are uniform over the K nearest neighbours (stable order: distance, then reference index);
a tied vote goes to the label that sorts first, as scikit-learn's KNeighborsClassifier does. When
fewer than K neighbours are available, K shrinks to what there is and the result records the K used.

Everything works on a precomputed distance matrix, so the same code serves Euclidean distances in
reconstructed-expression space and character-level Levenshtein distances between sentence strings
(rapidfuzz's C implementation, all pairs in one call).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.spatial.distance import cdist

KS = (5, 10, 25, 50)


def euclidean_distances(queries: np.ndarray, references: np.ndarray) -> np.ndarray:
    """[n_queries, n_references] Euclidean distances (float64)."""
    return cdist(np.asarray(queries, np.float64), np.asarray(references, np.float64))


def sentence_string(sentence: str) -> str:
    """The string compared by Levenshtein distance: words joined by single spaces."""
    return " ".join(sentence.split())


def levenshtein_distances(queries: Sequence[str], references: Sequence[str], workers: int = 1) -> np.ndarray:
    """[n_queries, n_references] character-level Levenshtein distances between sentence strings."""
    from rapidfuzz import process
    from rapidfuzz.distance import Levenshtein

    q = [sentence_string(s) for s in queries]
    r = [sentence_string(s) for s in references]
    return process.cdist(q, r, scorer=Levenshtein.distance, dtype=np.int32, workers=workers).astype(np.float64)


def knn_predict(
    distances: np.ndarray, reference_labels: Sequence[str], k: int, exclude: np.ndarray | None = None
) -> tuple[np.ndarray, int]:
    """Majority label of the k nearest references of every query, and the k actually used.

    `exclude` [n_queries, n_references] bool marks pairs that may not be neighbours (a cell and
    itself when it is also a reference).
    """
    distances = np.array(distances, dtype=np.float64, copy=True)
    if exclude is not None:
        distances[exclude] = np.inf
    available = int(np.isfinite(distances).sum(axis=1).min()) if distances.size else 0
    k_used = min(k, available)
    if k_used < 1:
        raise ValueError("no reference cells to vote")
    classes, codes = np.unique(np.asarray(reference_labels, dtype=object).astype(str), return_inverse=True)
    nearest = np.argsort(distances, axis=1, kind="stable")[:, :k_used]
    votes = np.zeros((len(distances), len(classes)), np.int64)
    np.add.at(votes, (np.repeat(np.arange(len(distances)), k_used), codes[nearest].ravel()), 1)
    return classes[np.argmax(votes, axis=1)], k_used


def knn_scores(
    to_reference: np.ndarray,
    reference_labels: Sequence[str],
    among_queries: np.ndarray,
    query_labels: Sequence[str],
    k: int,
    exclude_reference: np.ndarray | None = None,
) -> dict:
    """quality, discriminability and discriminability_loo at K (in %), and the K used by each.

    `to_reference`: [n_queries, n_references] distances from generated to real cells;
    `among_queries`: [n_queries, n_queries] distances among the generated cells.
    """
    wanted = np.asarray(query_labels, dtype=object).astype(str)
    by_real, k_real = knn_predict(to_reference, reference_labels, k, exclude_reference)
    by_generated, k_gen = knn_predict(among_queries, wanted, k)
    loo = np.eye(len(wanted), dtype=bool)
    by_generated_loo, k_loo = (
        knn_predict(among_queries, wanted, k, loo) if len(wanted) > 1 else (np.array(["\0none"] * len(wanted)), 0)
    )
    real_ok = by_real == wanted
    return {
        "quality": 100 * float(real_ok.mean()),
        "discriminability": 100 * float((real_ok & (by_generated == wanted)).mean()),
        "discriminability_loo": 100 * float((real_ok & (by_generated_loo == wanted)).mean()),
        "k_reference": k_real,
        "k_generated": k_gen,
        "k_generated_loo": k_loo,
    }


def knn_table(
    to_reference: np.ndarray,
    reference_labels: Sequence[str],
    among_queries: np.ndarray,
    query_labels: Sequence[str],
    exclude_reference: np.ndarray | None = None,
    ks: Sequence[int] = KS,
) -> dict[str, dict]:
    """`knn_scores` for every K, keyed "5", "10", ... (JSON keys)."""
    return {
        str(k): knn_scores(to_reference, reference_labels, among_queries, query_labels, k, exclude_reference)
        for k in ks
    }
