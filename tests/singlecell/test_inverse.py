"""Inverse transform: the fit recovers a planted line; reconstruction handles odd sentences."""

import numpy as np

from chatcell_jax.singlecell.inverse import InverseFit, InverseFitAccumulator, reconstruct_expression


def test_fit_recovers_planted_line_across_batches():
    rng = np.random.default_rng(0)
    ranks = rng.integers(0, 2000, size=50_000)
    values = 2.5 - 0.7 * np.log10(1 + ranks) + rng.normal(0, 0.01, size=ranks.size)
    acc = InverseFitAccumulator(seed=0, reservoir_size=5_000)
    for part in np.array_split(np.arange(ranks.size), 7):
        acc.add(ranks[part], values[part])
    fit = acc.result()
    assert abs(fit.slope + 0.7) < 0.005 and abs(fit.intercept - 2.5) < 0.005
    assert fit.r_squared > 0.99 and fit.pearson_r < -0.99 and fit.spearman_r < -0.99
    assert fit.n_points == int((np.log10(1 + ranks) < 3).sum())  # only log-rank < 3 counts
    assert fit.spearman_sample == 5_000


def test_reconstruction_drops_unknown_and_averages_repeats():
    fit = InverseFit(slope=-1.0, intercept=3.0, r_squared=1, pearson_r=-1, spearman_r=-1, n_points=1, spearman_sample=1)
    index = {"A": 0, "B": 1, "C": 2}
    vector, unknown = reconstruct_expression("A NOTAGENE b A", index, fit)
    assert unknown == 1
    assert vector[2] == 0  # C absent
    np.testing.assert_allclose(vector[0], 3.0 - np.log10(1 + 1.5))  # A at positions 0 and 3
    np.testing.assert_allclose(vector[1], 3.0 - np.log10(1 + 2))  # b (case-insensitive) at position 2
