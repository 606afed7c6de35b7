"""Answer-level metrics with known answers: classification against scikit-learn, sentence checks."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from chatcell_jax.evaluate.metrics import classification_metrics, confusion_matrix, normalise_answer, sentence_metrics

LABELS = ["T cell", "B cell", "NK cell", "Monocyte"]
# Hand-made: unbalanced classes, a class never predicted (Monocyte), a malformed answer, and answers
# that differ from the labels only by case and whitespace.
TRUTH = ["T cell", "T cell", "T cell", "T cell", "B cell", "B cell", "NK cell", "NK cell", "NK cell", "Monocyte"]
PRED = [
    " t cell",
    "T CELL",
    "B cell",
    "NK cell",
    "B cell",
    "T cell",
    "NK cell",
    "nk cell\n",
    "I think a T cell",
    "B cell",
]


def test_normalise_answer_strips_and_lowercases():
    assert normalise_answer("  CD4+ T Cell\n") == "cd4+ t cell"


def test_classification_matches_sklearn_weighted_on_hand_made_case():
    ours = classification_metrics(TRUTH, PRED, LABELS)
    t = [normalise_answer(x) for x in TRUTH]
    p = [normalise_answer(x) for x in PRED]
    assert ours["accuracy"] == pytest.approx(100 * accuracy_score(t, p))
    assert ours["accuracy"] == pytest.approx(50.0)  # 2 T + 1 B + 2 NK + 0 Monocyte of 10
    for key, fn in [
        ("precision_weighted", precision_score),
        ("recall_weighted", recall_score),
        ("f1_weighted", f1_score),
    ]:
        assert ours[key] == pytest.approx(100 * fn(t, p, average="weighted", zero_division=0)), key
    # Macro F1 is over the classes of the true answers (malformed strings are no class of their own).
    assert ours["f1_macro"] == pytest.approx(
        100 * f1_score(t, p, average="macro", labels=sorted(set(t)), zero_division=0)
    )


def test_malformed_share_counts_answers_outside_the_labels():
    ours = classification_metrics(TRUTH, PRED, LABELS)
    assert ours["malformed"] == pytest.approx(10.0)  # "I think a T cell"
    # Without the label list the true answers define it: the same answer is still malformed.
    assert classification_metrics(TRUTH, PRED)["malformed"] == pytest.approx(10.0)


def test_confusion_matrix_rows_true_columns_predicted_plus_malformed():
    t = [normalise_answer(x) for x in TRUTH]
    p = [normalise_answer(x) for x in PRED]
    labels = [normalise_answer(x) for x in LABELS]
    matrix = confusion_matrix(t, p, labels)
    assert matrix.shape == (4, 5)
    assert matrix.sum() == 10
    assert matrix[0].tolist() == [2, 1, 1, 0, 0]  # T cell: 2 right, one B, one NK
    assert matrix[2].tolist() == [0, 0, 2, 0, 1]  # NK cell: 2 right, one malformed
    assert matrix[3].tolist() == [0, 1, 0, 0, 0]  # Monocyte predicted as B cell


def test_perfect_answers_score_100_and_empty_input_is_an_error():
    perfect = classification_metrics(TRUTH, TRUTH, LABELS)
    assert perfect["accuracy"] == perfect["f1_weighted"] == perfect["f1_macro"] == 100.0
    assert perfect["malformed"] == 0.0
    with pytest.raises(ValueError):
        classification_metrics([], [])


VOCAB = [f"GENE{i}" for i in range(200)]


def test_validity_counts_a_planted_non_gene():
    sentence = " ".join(VOCAB[:99] + ["NOTAGENE"])
    result = sentence_metrics([sentence], VOCAB, 100)
    assert result["validity"] == pytest.approx(99.0)
    assert result["uniqueness"] == pytest.approx(100.0)
    assert result["mean_length"] == 100 and result["length_gap"] == 0


def test_validity_is_case_insensitive_and_pooled_over_words():
    # 10 words, all genes (one lower-case) + 2 words, one invalid: pooled 11/12 valid.
    sentences = [" ".join(VOCAB[:9] + ["gene9"]), "GENE5 XYZ"]
    result = sentence_metrics(sentences, VOCAB, 10)
    assert result["validity"] == pytest.approx(100 * 11 / 12)
    assert result["mean_length"] == pytest.approx(6.0)
    assert result["length_gap"] == pytest.approx(-4.0)
    assert result["mean_abs_length_error"] == pytest.approx((0 + 8) / 2)


def test_uniqueness_counts_repeats_within_a_sentence_only():
    sentences = ["GENE1 GENE2 GENE1 GENE1", "GENE1 GENE2"]  # distinct 2 + 2 of 6 words
    assert sentence_metrics(sentences, VOCAB, 4)["uniqueness"] == pytest.approx(100 * 4 / 6)


def test_empty_sentences_score_zero_not_nan():
    result = sentence_metrics(["", "   "], VOCAB, 100)
    assert result["validity"] == 0.0 and result["uniqueness"] == 0.0
    assert result["empty"] == 100.0 and result["length_gap"] == -100.0
    assert not np.isnan(result["mean_length"])
