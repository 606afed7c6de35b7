"""The bundled PBMC cells are the scanpy cells with their integer counts recovered exactly."""

import anndata as ad
import numpy as np

from chatcell_jax.singlecell.prepare import demo_data_path


def test_bundled_counts_reproduce_the_published_values():
    adata = ad.read_h5ad(demo_data_path())
    assert adata.shape == (700, 765)
    counts = adata.X.toarray().astype(np.float64)
    assert np.all(counts == np.round(counts)) and counts.min() == 0
    published = adata.layers["scanpy_raw_log1p"].toarray().astype(np.float64)
    n_counts = adata.obs["n_counts_original"].to_numpy()[:, None]
    recovered = np.round(np.expm1(published) * n_counts / 1e4)
    np.testing.assert_array_equal(recovered, counts)
    # and forwards: the counts give the published values back (which scanpy rounded to 3 decimals)
    np.testing.assert_allclose(np.log1p(counts * 1e4 / n_counts), published, rtol=0, atol=5.1e-4)
    assert adata.obs["cell_type"].nunique() == 10
    assert adata.obs["cell_type"].value_counts().min() == 8
