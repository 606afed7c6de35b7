"""The CPU kernels of decoding give exactly what the plain jax operations give (values, ties, bits)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chatcell_jax.serve.cpu_kernels import (
    argmax_first,
    categorical,
    chunk_size,
    gumbel_at,
    top_k_barrier,
    top_k_chunked,
)
from chatcell_jax.serve.decoding import row_keys


@pytest.mark.parametrize("m,k", [(512, 8), (1024, 4), (4096, 50), (32128 * 4, 8)])
def test_chunked_top_k_matches_lax_top_k_with_ties(m, k):
    rng = np.random.default_rng(m + k)
    x = rng.integers(-4, 4, size=(3, m)).astype(np.float32)  # many ties, across chunk boundaries
    x[0, rng.integers(0, m, 30)] = -np.inf
    x[2] = rng.normal(size=m)
    chunk = chunk_size(m, k)
    assert chunk
    got, want = top_k_chunked(jnp.asarray(x), k, chunk), top_k_barrier(jnp.asarray(x), k)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def testgumbel_at_reproduces_jax_random_gumbel():
    keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(row_keys(3, jnp.arange(4)), 7)
    full = jax.vmap(lambda key: jax.random.gumbel(key, (5000,)))(keys)
    index = jnp.asarray(np.random.default_rng(0).integers(0, 5000, (4, 64)), jnp.int32)
    np.testing.assert_array_equal(jax.jit(jax.vmap(gumbel_at))(keys, index), jnp.take_along_axis(full, index, 1))


@pytest.mark.parametrize("ties", [False, True])
def test_top_kcategorical_draws_what_jax_randomcategorical_draws(ties):
    rng, k, vocab = np.random.default_rng(int(ties)), 20, 4096
    for trial in range(5):
        x = (rng.normal(size=(8, vocab)) * 3).astype(np.float32)
        if ties:  # more than k entries share the k-th value: the exact fallback
            x = np.round(x)
        x = np.where(x < np.sort(x, -1)[:, -k][:, None], -np.inf, x)
        keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(row_keys(trial, jnp.arange(8)), trial)
        want = jax.vmap(jax.random.categorical)(keys, jnp.asarray(x))
        np.testing.assert_array_equal(jax.jit(categorical, static_argnums=2)(keys, jnp.asarray(x), k), want)


def testargmax_first_is_jnpargmax_first():
    x = jnp.asarray(np.round(np.random.default_rng(0).normal(size=(6, 300))), jnp.float32)  # ties: first wins
    np.testing.assert_array_equal(argmax_first(x), jnp.argmax(x, axis=-1))
