"""k-NN quality / discriminability and distribution distances with known answers."""

import numpy as np
import pytest
from scipy import linalg
from sklearn.neighbors import KNeighborsClassifier

from chatcell_jax.evaluate import distributions, neighbours
from chatcell_jax.evaluate.generation import CellSet, Space, pseudo_cells
from chatcell_jax.singlecell.inverse import InverseFit

TYPES = ["alpha", "beta", "gamma", "delta"]
GENES = [f"G{i}" for i in range(400)]
FIT = InverseFit(
    slope=-0.7, intercept=2.8, r_squared=0.9, pearson_r=-0.95, spearman_r=-0.9, n_points=1, spearman_sample=1
)


def typed_sentences(n_per_type: int, seed: int, n_genes: int = 30) -> tuple[list[str], list[str]]:
    """Sentences whose genes come mostly from a type's own pool of 100 genes: well-separated types."""
    rng = np.random.default_rng(seed)
    sentences, labels = [], []
    for t, name in enumerate(TYPES):
        pool = GENES[100 * t : 100 * t + 40]
        for _ in range(n_per_type):
            sentences.append(" ".join(rng.permutation(pool)[:n_genes]))
            labels.append(name)
    return sentences, labels


def test_knn_predict_matches_sklearn():
    rng = np.random.default_rng(0)
    ref, queries = rng.normal(size=(120, 6)), rng.normal(size=(40, 6))
    labels = rng.choice(TYPES, 120)
    distances = neighbours.euclidean_distances(queries, ref)
    for k in neighbours.KS:
        ours, used = neighbours.knn_predict(distances, labels, k)
        theirs = KNeighborsClassifier(n_neighbors=k).fit(ref, labels).predict(queries)
        assert used == k
        assert ours.tolist() == theirs.tolist(), k


def test_knn_shrinks_k_and_excludes_pairs():
    distances = np.array([[0.0, 1.0, 2.0]])
    labels = ["a", "b", "b"]
    pred, used = neighbours.knn_predict(distances, labels, 50)
    assert used == 3 and pred.tolist() == ["b"]
    pred, used = neighbours.knn_predict(distances, labels, 1, exclude=np.array([[False, False, False]]))
    assert pred.tolist() == ["a"]
    pred, used = neighbours.knn_predict(distances, labels, 1, exclude=np.array([[True, False, False]]))
    assert pred.tolist() == ["b"] and used == 1


def test_levenshtein_distances_are_character_level():
    def reference(a: str, b: str) -> int:
        row = list(range(len(b) + 1))
        for i, ca in enumerate(a, 1):
            prev, row[0] = row[0], i
            for j, cb in enumerate(b, 1):
                prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
        return row[-1]

    a, b = ["CD3E  CD4 ", "GNLY NKG7", ""], ["CD3E CD8A", "NKG7 GNLY", "X"]
    ours = neighbours.levenshtein_distances(a, b)
    expected = [[reference(" ".join(x.split()), y) for y in b] for x in a]
    assert ours.tolist() == expected


def _run(outputs, requested, reference_sentences, reference_labels):
    space = Space(GENES, FIT, 30)
    own = CellSet([f"own{i}" for i in range(len(outputs))], list(requested), list(outputs))
    reference = CellSet(
        [f"ref{i}" for i in range(len(reference_sentences))], list(reference_labels), list(reference_sentences)
    )
    result, _ = pseudo_cells(outputs, requested, own, reference, None, space)
    return result["knn"]


def test_identical_generated_and_real_cells_give_quality_one():
    sentences, labels = typed_sentences(20, seed=1)
    knn = _run(sentences, labels, sentences, labels)
    for space in ("expression", "levenshtein"):
        for k in ("5", "10"):
            assert knn[space]["model"][k]["quality"] == 100.0, (space, k)
            assert knn[space]["model"][k]["discriminability"] == 100.0, (space, k)


def test_labels_shuffled_against_cells_give_chance_level_knn():
    sentences, labels = typed_sentences(50, seed=2)
    generated, requested = typed_sentences(25, seed=3)
    honest = _run(generated, requested, sentences, labels)
    space = Space(GENES, FIT, 30)
    distances = {
        "expression": neighbours.euclidean_distances(space.reconstruct(generated), space.reconstruct(sentences)),
        "levenshtein": neighbours.levenshtein_distances(generated, sentences),
    }
    among = np.zeros((len(generated), len(generated)))
    rng = np.random.default_rng(4)
    for name, to_reference in distances.items():
        assert honest[name]["model"]["10"]["quality"] == 100.0
        # Cells of one type share their neighbours, so one shuffle moves whole types at once:
        # average over many shuffles. Four types: chance is 25 %.
        qualities = [
            neighbours.knn_scores(to_reference, rng.permutation(labels), among, requested, 10)["quality"]
            for _ in range(40)
        ]
        assert 15.0 < np.mean(qualities) < 35.0, name


def test_discriminability_needs_both_classifiers():
    # Generated cells all look like type alpha: quality is 25 %, and discriminability cannot exceed it.
    sentences, labels = typed_sentences(20, seed=5)
    alpha = [s for s, l in zip(sentences, labels) if l == "alpha"]
    requested = TYPES * 5
    knn = _run(alpha, requested, sentences, labels)
    table = knn["expression"]["model"]["5"]
    assert table["quality"] == pytest.approx(25.0)
    assert table["discriminability"] <= table["quality"]
    assert table["discriminability_loo"] <= table["quality"]


def test_mmd_is_zero_for_identical_sets_and_grows_with_shift():
    x = np.random.default_rng(0).normal(size=(60, 4))
    gamma = distributions.median_gamma(x)
    assert distributions.rbf_mmd2(x, x, gamma) == pytest.approx(0.0, abs=1e-12)
    near, far = distributions.rbf_mmd2(x, x + 0.5, gamma), distributions.rbf_mmd2(x, x + 2.0, gamma)
    assert 0 < near < far


def test_frechet_distance_known_answers():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 5))
    assert distributions.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    shift = np.array([1.0, 2.0, 0.0, 0.0, -1.0])
    assert distributions.frechet_distance(x, x + shift) == pytest.approx(6.0)  # same covariance: ||shift||^2
    y = rng.normal(size=(300, 5)) * 2 + 1
    cx, cy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    expected = np.sum((x.mean(0) - y.mean(0)) ** 2) + np.trace(cx + cy - 2 * np.real(linalg.sqrtm(cx @ cy)))
    assert distributions.frechet_distance(x, y) == pytest.approx(expected)
    # Fewer cells than dimensions: singular covariances still give a finite, non-negative value.
    assert np.isfinite(distributions.frechet_distance(x[:3], y[:4]))


def test_projection_keeps_the_main_axis():
    rng = np.random.default_rng(2)
    x = np.column_stack([rng.normal(size=100) * 10, rng.normal(size=100) * 0.1, np.zeros(100)])
    projection = distributions.Projection.fit(x, 2)
    assert abs(projection.components[0, 0]) == pytest.approx(1.0, abs=1e-3)
    assert projection.explained_variance_ratio[0] > 0.99
    assert projection.transform(x).shape == (100, 2)
