"""Small configs and inputs shared by the model, HF and sharding tests."""

from __future__ import annotations

import functools

import jax
import numpy as np

from chatcell_jax.model import T5Config
from chatcell_jax.model import t5 as t5_fn

VOCAB = 99  # not a multiple of 128: padding is always exercised

# Few buckets and a short max distance so that sequences of ~20 tokens reach the logarithmic and
# the "far" buckets.
V10 = dict(
    vocab_size=VOCAB,
    d_model=32,
    d_kv=8,
    d_ff=64,
    num_layers=2,
    num_decoder_layers=3,
    num_heads=4,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=12,
    dropout_rate=0.0,
    feed_forward_proj="relu",
    tie_word_embeddings=True,
)
V11 = dict(V10, feed_forward_proj="gated-gelu", tie_word_embeddings=False, num_decoder_layers=2)


def config(kind: str = "v1.0", **overrides) -> T5Config:
    return T5Config(**{**(V10 if kind == "v1.0" else V11), **overrides})


def batch(b: int = 4, s: int = 19, t: int = 13, seed: int = 0, vocab: int = VOCAB):
    """input_ids, attention_mask (with right padding), decoder_input_ids, decoder_attention_mask."""
    rng = np.random.RandomState(seed)
    ids = rng.randint(2, vocab, (b, s)).astype(np.int32)
    mask = np.ones((b, s), np.int32)
    for row in range(1, b):
        mask[row, s - 3 * row :] = 0
    ids[mask == 0] = 0
    dec = rng.randint(2, vocab, (b, t)).astype(np.int32)
    dec[:, 0] = 0  # decoder start token
    dec_mask = np.ones((b, t), np.int32)
    dec_mask[-1, t - 2 :] = 0
    return ids, mask, dec, dec_mask


@functools.cache
def jitted(name: str, cfg: T5Config):
    """A jitted functional entry point (forward, encode, init_cache, decode_step) for `cfg`: tests
    call the model compiled, as real code does; eager dispatch is many times slower on CPU."""
    fn = getattr(t5_fn, name)
    static = {"init_cache": (2, 3)}.get(name, ())
    return jax.jit(functools.partial(fn, cfg), static_argnums=tuple(i - 1 for i in static))


def logits(model, b=None, dropout_rng=None) -> np.ndarray:
    ids, mask, dec, dec_mask = b or batch()
    return np.asarray(jitted("forward", model.config)(model.params(), ids, mask, dec, dec_mask, dropout_rng))
