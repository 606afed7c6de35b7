"""Honest baselines for the classification tasks, on the very cells the model is scored on.

A model's 80 % accuracy means little until we know what a majority vote or a plain classifier on
the expression gets on the same cells. All three baselines are fitted on the *train* split's cells
(normalised expression rebuilt from the source file) and scored on the evaluated split's records of
the task, with the same metric function as the model:

- `majority`: always the most frequent train label (ties: the label that sorts first);
- `knn`: k-nearest neighbours (Euclidean, k = 10) on log10(1 + normalised expression);
- `logistic_regression`: multinomial logistic regression (L2, C = 1) on the same features.

Features are the `max_genes` most variable genes of the train cells (all genes when fewer), so a
whole-transcriptome file does not turn into a dense matrix of tens of thousands of columns.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from chatcell_jax.evaluate.metrics import classification_metrics

log = logging.getLogger(__name__)

KNN_NEIGHBOURS = 10


def variable_genes(train: sp.csr_matrix, max_genes: int) -> np.ndarray:
    """Column indices of the `max_genes` genes with the largest variance over the train cells."""
    x = sp.csr_matrix(train, dtype=np.float64)
    mean = np.asarray(x.mean(axis=0)).ravel()
    variance = np.asarray(x.multiply(x).mean(axis=0)).ravel() - mean**2
    order = np.argsort(-variance, kind="stable")
    return np.sort(order[: min(max_genes, int((variance > 0).sum()) or 1)])


def majority_label(train_labels: Sequence[str]) -> str:
    counts = Counter(train_labels)
    return min(counts, key=lambda label: (-counts[label], label))


def fit_predict(
    train_x: sp.csr_matrix, train_labels: Sequence[str], test_x: sp.csr_matrix, max_genes: int = 2000, seed: int = 0
) -> dict[str, list[str]]:
    """Predictions of every baseline for the test rows: {baseline name: labels}."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    columns = variable_genes(train_x, max_genes)
    a = train_x[:, columns].toarray().astype(np.float32)
    b = test_x[:, columns].toarray().astype(np.float32)
    labels = np.asarray(train_labels, dtype=object).astype(str)
    predictions = {"majority": [majority_label(labels.tolist())] * b.shape[0]}
    if len(set(labels.tolist())) < 2:
        log.warning("the train cells have one label only: k-NN and logistic regression baselines skipped")
        return predictions
    knn = KNeighborsClassifier(n_neighbors=min(KNN_NEIGHBOURS, len(labels))).fit(a, labels)
    predictions["knn"] = knn.predict(b).tolist()
    logistic = LogisticRegression(C=1.0, max_iter=2000, random_state=seed).fit(a, labels)
    predictions["logistic_regression"] = logistic.predict(b).tolist()
    return predictions


def classification_baselines(
    train_x: sp.csr_matrix,
    train_labels: Sequence[str],
    test_x: sp.csr_matrix,
    test_truth: Sequence[str],
    known_labels: Sequence[str],
    max_genes: int = 2000,
    seed: int = 0,
) -> dict[str, dict]:
    """Metrics of every baseline on the test rows: {baseline name: classification_metrics(...)}."""
    predictions = fit_predict(train_x, train_labels, test_x, max_genes, seed)
    return {name: classification_metrics(test_truth, pred, known_labels) for name, pred in predictions.items()}
