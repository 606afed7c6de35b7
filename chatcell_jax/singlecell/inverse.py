"""Inverse transform: from a gene's rank in a cell sentence back to its expression.

Cell2Sentence observed that log10(1 + normalised expression) is close to linear in
log10(1 + rank). We fit that line by least squares over every expressed gene whose
log10(1 + rank) < 3 (the first 999 ranks, where the line holds), then place a generated gene at
position p at intercept + slope * log10(1 + p).

The fit streams: the least-squares line, R^2 and Pearson's r come from running sums, so they are
exact for any number of cells. Spearman's rho needs every point's rank; it is computed on a seeded
uniform reservoir sample (default 200,000 points), which the manifest records.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import spearmanr

log = logging.getLogger(__name__)

MAX_LOG_RANK = 3.0


@dataclass(frozen=True)
class InverseFit:
    slope: float
    intercept: float
    r_squared: float
    pearson_r: float
    spearman_r: float
    n_points: int
    spearman_sample: int

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> InverseFit:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})

    def expression_at(self, positions: np.ndarray) -> np.ndarray:
        """log10(1 + normalised expression) predicted for 0-based sentence positions."""
        return self.intercept + self.slope * np.log10(1.0 + np.asarray(positions, dtype=np.float64))


class InverseFitAccumulator:
    """Running sums for the rank-expression line, plus a reservoir sample for Spearman."""

    def __init__(self, seed: int = 0, reservoir_size: int = 200_000):
        self._sums = np.zeros(6)  # n, sx, sy, sxx, syy, sxy
        self._rng = np.random.default_rng(seed)
        self._size = reservoir_size
        self._sample = np.empty((0, 2))
        self._seen = 0

    def add(self, ranks: np.ndarray, values: np.ndarray) -> None:
        x = np.log10(1.0 + ranks.astype(np.float64))
        keep = x < MAX_LOG_RANK
        x, y = x[keep], values[keep].astype(np.float64)
        self._sums += [len(x), x.sum(), y.sum(), (x * x).sum(), (y * y).sum(), (x * y).sum()]
        self._reservoir_add(np.column_stack([x, y]))

    def _reservoir_add(self, points: np.ndarray) -> None:
        # Algorithm R, vectorised: point number t (1-based) replaces a random slot with prob size/t.
        free = max(0, self._size - len(self._sample))
        self._sample = np.concatenate([self._sample, points[:free]])
        rest = points[free:]
        t = self._seen + free + 1 + np.arange(len(rest))
        slots = (self._rng.random(len(rest)) * t).astype(np.int64)
        hit = slots < self._size
        self._sample[slots[hit]] = rest[hit]  # a repeated slot keeps one of its points: still uniform
        self._seen += len(points)

    def result(self) -> InverseFit:
        n, sx, sy, sxx, syy, sxy = self._sums
        if n < 3:
            raise ValueError("too few expressed genes to fit the inverse transform")
        cov, var_x, var_y = sxy - sx * sy / n, sxx - sx * sx / n, syy - sy * sy / n
        slope = cov / var_x if var_x > 0 else 0.0
        intercept = (sy - slope * sx) / n
        pearson = cov / np.sqrt(var_x * var_y) if var_x > 0 and var_y > 0 else 0.0
        spearman = spearmanr(self._sample[:, 0], self._sample[:, 1]).statistic if len(self._sample) > 2 else 0.0
        return InverseFit(
            slope=float(slope),
            intercept=float(intercept),
            r_squared=float(pearson**2),
            pearson_r=float(pearson),
            spearman_r=float(np.nan_to_num(spearman)),
            n_points=int(n),
            spearman_sample=len(self._sample),
        )


def reconstruct_expression(
    sentence: str | list[str], gene_index: dict[str, int], fit: InverseFit
) -> tuple[np.ndarray, int]:
    """Expression vector (log10(1 + normalised) scale, one entry per gene of `gene_index`).

    Words that are not genes of the vocabulary are dropped and counted; a gene named several times
    is placed once, at the mean of its positions. Returns (vector, number of unknown words).
    """
    words = sentence.split() if isinstance(sentence, str) else list(sentence)
    positions: dict[int, list[int]] = {}
    unknown = 0
    for position, word in enumerate(words):
        column = gene_index.get(word.upper())
        if column is None:
            unknown += 1
        else:
            positions.setdefault(column, []).append(position)
    vector = np.zeros(len(gene_index), dtype=np.float32)
    if positions:
        columns = np.fromiter(positions, dtype=np.int64)
        mean_positions = np.array([np.mean(p) for p in positions.values()])
        vector[columns] = np.maximum(fit.expression_at(mean_positions), 0.0)
    return vector, unknown
