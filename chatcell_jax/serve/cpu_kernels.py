"""Fast CPU routes for decoding's hot operations, each equal to the plain jax operation it replaces.

XLA's CPU backend makes a few of decoding's per-step operations cost more than the model step at
a 32k vocabulary: a variadic-reduce argmax, Gumbel noise for every vocabulary entry, a TopK over
long rows (which XLA also rewrites into a full sort when part of its output is unused). Each
function here computes exactly what the plain operation computes (same values, same tie-breaking,
same random bits), and `tests/serve/test_cpu_kernels.py` checks each against it. `gumbel_at` relies on
jax internals (the partitionable threefry's bit layout); `categorical` falls back to the plain draw
when those do not hold.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def argmax_first(x: jax.Array) -> jax.Array:
    """`jnp.argmax` over the last axis (first index of the maximum) as two plain reductions: XLA's
    CPU argmax (a variadic reduce) is much slower than a max over the same [rows, 32k] logits."""
    first = jnp.where(x == jnp.max(x, axis=-1, keepdims=True), jnp.arange(x.shape[-1]), x.shape[-1])
    return jnp.min(first, axis=-1)


def categorical(keys: jax.Array, warped: jax.Array, top_k: int) -> jax.Array:
    """`vmap(jax.random.categorical)(keys, warped)`, the same tokens, drawn cheaply after top-k.

    categorical is argmax(logits + Gumbel noise) with noise for every vocabulary entry; on CPU
    that noise (threefry over [rows, 32k]) cost more than the model step. After top-k every entry
    outside the top k is -inf and cannot win, so the noise is computed for those k only, with the
    bits jax would draw at their positions. Fallback to the full draw when a row keeps more than k
    entries (ties at the k-th value) or none, or when jax's generator is not the partitionable
    threefry whose per-position bits `gumbel_at` reproduces."""
    full = lambda: jax.vmap(jax.random.categorical)(keys, warped)
    if top_k <= 0 or top_k >= warped.shape[-1] // 4 or not fast_gumbel_supported(keys):
        return full()
    values, index = top_k_stable(warped, top_k + 1)
    fits = jnp.all((values[:, top_k] == -jnp.inf) & (values[:, 0] > -jnp.inf))
    index = jnp.sort(index[:, :top_k], axis=-1)  # index order: ties go to the lower index, as argmax

    def fast():
        noisy = jax.vmap(gumbel_at)(keys, index) + jnp.take_along_axis(warped, index, axis=-1)
        return jnp.take_along_axis(index, argmax_first(noisy)[:, None], axis=-1)[:, 0]

    return jax.lax.cond(fits, fast, full)


def fast_gumbel_supported(keys: jax.Array) -> bool:
    return (
        keys.dtype == jnp.uint32
        and keys.shape[-1] == 2
        and jax.config.jax_default_prng_impl == "threefry2x32"
        and bool(jax.config.jax_threefry_partitionable)
    )


def gumbel_at(key: jax.Array, index: jax.Array) -> jax.Array:
    """`jax.random.gumbel(key, (V,))[index]` for a raw threefry key, any V > max(index).

    With partitionable threefry, entry j's 32 bits are the xor of threefry2x32(key, (0, j)), and
    uniform/gumbel are elementwise on them (jax.random's _uniform and _gumbel, float32, mode "low").
    tests/serve/test_cpu_kernels.py checks this against jax.random.gumbel."""
    from jax.extend.random import threefry2x32_p

    index = index.astype(jnp.uint32)
    hi, lo = threefry2x32_p.bind(key[0], key[1], jnp.zeros_like(index), index)
    bits = jax.lax.shift_right_logical(hi ^ lo, jnp.uint32(32 - 23)) | jnp.uint32(0x3F800000)
    floats = jax.lax.bitcast_convert_type(bits, jnp.float32) - jnp.float32(1.0)
    tiny = jnp.float32(jnp.finfo(jnp.float32).tiny)
    uniform = jnp.maximum(tiny, floats * (jnp.float32(1.0) - tiny) + tiny)
    return -jnp.log(-jnp.log(uniform))


def top_k_stable(x: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """Top k along the last axis of [rows, M], ties resolved towards the lower index (like a stable
    sort). Long rows go through `top_k_chunked`, same result, a fraction of the time."""
    chunk = chunk_size(x.shape[-1], k)
    return top_k_chunked(x, k, chunk) if chunk else top_k_barrier(x, k)


def top_k_barrier(x: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """`lax.top_k`. The optimization barrier keeps XLA from rewriting the TopK into a full sort of
    the row when only part of its output is used (on CPU that rewrite makes a sampling step far slower)."""
    return jax.lax.optimization_barrier(jax.lax.top_k(x, k))


def chunk_size(m: int, k: int) -> int:
    """The largest chunk width dividing m that leaves at least 4k chunks, or 0 (not worth it)."""
    return next((c for c in (128, 64, 32, 16, 8) if m % c == 0 and m // c >= 4 * k), 0)


def top_k_chunked(x: jax.Array, k: int, chunk: int) -> tuple[jax.Array, jax.Array]:
    """Exact top k via chunk maxima: XLA's CPU TopK over a [16, 4 x 32k] beam row cost more than
    the model step; a max over chunks of `chunk` values is one vectorised pass.

    The top k values lie in the k chunks with the largest maxima (ranking chunks by max, then
    lower chunk first: each chunk ranked above one holding a top-k value owns a value ranked above
    it). Those chunks, in index order, hold the candidates in index order, so the final `top_k`
    breaks ties towards the lower index exactly as one over the whole row would."""
    rows, m = x.shape
    chunks = x.reshape(rows, m // chunk, chunk)
    best = jnp.sort(top_k_barrier(jnp.max(chunks, axis=-1), k)[1], axis=-1)  # [rows, k] chunk ids
    candidates = jnp.take_along_axis(chunks, best[:, :, None], axis=1).reshape(rows, k * chunk)
    values, pos = top_k_barrier(candidates, k)
    index = jnp.take_along_axis(best, pos // chunk, axis=1) * chunk + pos % chunk
    return values, index
