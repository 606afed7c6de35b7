"""Answer-level metrics: classification answers (annotation, drug) and generated gene lists.

Definitions follow ChatCell's evaluation so our numbers sit next to its published tables:

- Classification compares *normalised* answers (`strip().lower()`). A malformed answer (anything
  that is not one of the task's labels) is simply a wrong answer; we also report how often it
  happens. Weighted precision / recall / F1 average the per-class scores with the class support
  in the true answers as weight (scikit-learn's `average="weighted"`, zero when a class is never
  predicted). Macro F1 is our addition: the plain mean of the per-class F1 over the classes that
  occur in the true answers, so malformed strings never become classes of their own.
- Random generation pools every generated word of every sentence: validity is the share of words
  that are genes of the data set's vocabulary (upper-cased, as sentences are), uniqueness is the sum
  over sentences of distinct genes divided by all generated words, mean length is words per sentence.
  ChatCell pools the same way, so a long invalid sentence weighs more than a short one.

All percentages are 0-100, like ChatCell's tables.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np


def normalise_answer(text: object) -> str:
    """The comparison form of an answer: stripped and lower-cased (ChatCell's rule)."""
    return str(text).strip().lower()


def confusion_matrix(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """Counts [len(labels), len(labels) + 1]: row = true label, column = predicted label.

    The last column counts predictions that are none of `labels` (malformed answers). Inputs are
    compared as given; normalise them first. True answers outside `labels` are not counted.
    """
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels) + 1), np.int64)
    for truth, pred in zip(y_true, y_pred, strict=True):
        row = index.get(truth)
        if row is not None:
            matrix[row, index.get(pred, len(labels))] += 1
    return matrix


def per_class_scores(y_true: Sequence[str], y_pred: Sequence[str]) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support (count) for every class of the true answers.

    Precision of a class never predicted is 0 (scikit-learn's `zero_division=0`)."""
    support = Counter(y_true)
    predicted = Counter(y_pred)
    hits = Counter(t for t, p in zip(y_true, y_pred, strict=True) if t == p)
    scores = {}
    for label in sorted(support):
        precision = hits[label] / predicted[label] if predicted[label] else 0.0
        recall = hits[label] / support[label]
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores[label] = {"precision": precision, "recall": recall, "f1": f1, "support": support[label]}
    return scores


def classification_metrics(
    y_true: Sequence[str], y_pred: Sequence[str], known_labels: Iterable[str] | None = None
) -> dict:
    """Accuracy, weighted P/R/F1, macro F1 (all %) and the malformed-answer share (%).

    `known_labels`: the task's valid answers (default: the distinct true answers); a prediction
    outside them after normalisation counts as malformed.
    """
    truth = [normalise_answer(t) for t in y_true]
    pred = [normalise_answer(p) for p in y_pred]
    if not truth:
        raise ValueError("no answers to score")
    known = {normalise_answer(label) for label in known_labels} if known_labels is not None else set(truth)
    per_class = per_class_scores(truth, pred)
    n = len(truth)

    def weighted(key: str) -> float:
        return 100 * sum(s[key] * s["support"] for s in per_class.values()) / n

    return {
        "n": n,
        "accuracy": 100 * sum(t == p for t, p in zip(truth, pred)) / n,
        "precision_weighted": weighted("precision"),
        "recall_weighted": weighted("recall"),
        "f1_weighted": weighted("f1"),
        "f1_macro": 100 * float(np.mean([s["f1"] for s in per_class.values()])),
        "malformed": 100 * sum(p not in known for p in pred) / n,
        "per_class": per_class,
    }


def sentence_metrics(sentences: Sequence[str], vocabulary: Iterable[str], n_genes: int) -> dict:
    """Length, validity and uniqueness of generated gene lists (ChatCell's pooled definitions).

    - `mean_length`: words per sentence; `length_gap`: mean_length - n_genes (the requested N);
      `mean_abs_length_error`: mean over sentences of |words - N| (our addition: over- and
      under-long sentences do not cancel).
    - `validity`: % of all words that are genes of `vocabulary` (compared upper-cased).
    - `uniqueness`: sum over sentences of distinct words / all words, in %.
    - `empty`: % of sentences with no words. With no words at all, validity and uniqueness are 0.
    """
    if not sentences:
        raise ValueError("no sentences to score")
    genes = {g.upper() for g in vocabulary}
    words = [s.upper().split() for s in sentences]
    lengths = np.array([len(w) for w in words])
    total = int(lengths.sum())
    valid = sum(w in genes for ws in words for w in ws)
    distinct = sum(len(set(ws)) for ws in words)
    return {
        "n": len(sentences),
        "mean_length": float(lengths.mean()),
        "length_gap": float(lengths.mean() - n_genes),
        "mean_abs_length_error": float(np.abs(lengths - n_genes).mean()),
        "validity": 100 * valid / total if total else 0.0,
        "uniqueness": 100 * distinct / total if total else 0.0,
        "empty": 100 * float((lengths == 0).mean()),
    }
