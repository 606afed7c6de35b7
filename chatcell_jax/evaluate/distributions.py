"""Distribution distances between generated and real cells of one type (our addition to ChatCell).

k-NN quality asks "does each generated cell land near real cells of its type?"; it cannot see a
model that emits the same typical cell every time. Distances between whole sets can:

- **RBF-MMD**: the (biased, V-statistic) squared maximum mean discrepancy with a Gaussian kernel
  exp(-gamma * ||x - y||^2). It is 0 for identical sets and never negative. `gamma` comes from the
  median heuristic on the *reference* cells (1 / median squared pairwise distance), fixed once per
  evaluation so the model and its baselines are measured with the same kernel.
- **Frechet distance**: ||mu_x - mu_y||^2 + Tr(S_x + S_y - 2 (S_x S_y)^(1/2)) between Gaussians
  fitted to the two sets (the FID formula), in a low-dimensional PCA space fitted on the reference
  cells: covariances of a few hundred cells in thousands of genes would be rank-deficient noise.
  The matrix square root is taken through a symmetric eigen-decomposition, which stays exact for
  the singular covariances of small groups.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.distance import cdist, pdist


@dataclass(frozen=True)
class Projection:
    """A PCA fitted on reference cells: mean and principal axes (rows)."""

    mean: np.ndarray
    components: np.ndarray
    explained_variance_ratio: np.ndarray

    @classmethod
    def fit(cls, reference: np.ndarray, n_components: int = 10) -> Projection:
        x = np.asarray(reference, np.float64)
        mean = x.mean(axis=0)
        _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
        n = max(1, min(n_components, len(s)))
        variance = s**2
        ratio = variance[:n] / variance.sum() if variance.sum() > 0 else np.zeros(n)
        return cls(mean, vt[:n], ratio)

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, np.float64) - self.mean) @ self.components.T


def median_gamma(reference: np.ndarray) -> float:
    """RBF gamma = 1 / median squared pairwise distance of the reference (1.0 if degenerate)."""
    if len(reference) < 2:
        return 1.0
    median = float(np.median(pdist(np.asarray(reference, np.float64), "sqeuclidean")))
    return 1.0 / median if median > 0 else 1.0


def rbf_mmd2(x: np.ndarray, y: np.ndarray, gamma: float) -> float:
    """Biased squared MMD between the rows of x and y under exp(-gamma ||a - b||^2)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) == 0 or len(y) == 0:
        raise ValueError("MMD needs at least one cell on each side")

    def mean_kernel(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.exp(-gamma * cdist(a, b, "sqeuclidean")).mean())

    return max(0.0, mean_kernel(x, x) + mean_kernel(y, y) - 2 * mean_kernel(x, y))


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to the rows of x and y (at least 2 rows each)."""
    x, y = np.atleast_2d(np.asarray(x, np.float64)), np.atleast_2d(np.asarray(y, np.float64))
    if len(x) < 2 or len(y) < 2:
        raise ValueError("the Frechet distance needs at least two cells on each side")
    mu_x, mu_y = x.mean(axis=0), y.mean(axis=0)
    cov_x, cov_y = np.atleast_2d(np.cov(x, rowvar=False)), np.atleast_2d(np.cov(y, rowvar=False))
    value = float(
        np.sum((mu_x - mu_y) ** 2) + np.trace(cov_x) + np.trace(cov_y) - 2 * _trace_sqrt_product(cov_x, cov_y)
    )
    return max(0.0, value)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def _trace_sqrt_product(a: np.ndarray, b: np.ndarray) -> float:
    """Tr((A B)^(1/2)) for PSD A, B, as the sum of sqrt-eigenvalues of A^(1/2) B A^(1/2).

    That matrix is symmetric PSD with the same eigenvalues as A B, so this stays exact and stable
    when the covariances are singular (fewer cells than PCA dimensions), where a general matrix
    square root of A B is not.
    """
    root = _psd_sqrt(a)
    return float(np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(root @ b @ root), 0, None))))


def per_type_distances(
    candidates: np.ndarray,
    candidate_types: np.ndarray,
    reference: np.ndarray,
    reference_types: np.ndarray,
    gamma: float,
) -> dict:
    """MMD and Frechet distance per type (types with >= 2 cells on both sides) and their means.

    Inputs are already projected (PCA space). Returns {"per_type": {type: {...}}, "mean_mmd",
    "mean_frechet", "types"}; means are None when no type qualifies.
    """
    per_type = {}
    for cell_type in sorted(set(candidate_types.tolist()) & set(reference_types.tolist())):
        a, b = candidates[candidate_types == cell_type], reference[reference_types == cell_type]
        if len(a) < 2 or len(b) < 2:
            continue
        per_type[cell_type] = {
            "n_generated": int(len(a)),
            "n_reference": int(len(b)),
            "mmd": rbf_mmd2(a, b, gamma),
            "frechet": frechet_distance(a, b),
        }
    mean = lambda key: float(np.mean([v[key] for v in per_type.values()])) if per_type else None
    return {"per_type": per_type, "mean_mmd": mean("mmd"), "mean_frechet": mean("frechet"), "types": len(per_type)}
