"""Tokenised training examples and seeded, padded batches.

Sources and targets are tokenised once. Examples longer than the limits are truncated (keeping
EOS) and counted. Every batch is padded to the same lengths (the longest example of the split,
rounded up to a multiple of 32, within the limits), so the train step compiles once.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

IGNORE = -100  # label id ignored by the loss, as in Hugging Face


@dataclass
class Examples:
    sources: list[list[int]]
    targets: list[list[int]]
    truncated: int
    source_length: int
    target_length: int


def _cut(ids: list[int], limit: int, eos: int) -> tuple[list[int], bool]:
    return (ids, False) if len(ids) <= limit else (ids[: limit - 1] + [eos], True)


def tokenize(records: list[dict], tokenizer, max_source: int, max_target: int) -> Examples:
    eos = tokenizer.eos_token_id
    src = tokenizer([r["source"] for r in records])["input_ids"]
    tgt = tokenizer([r["target"] for r in records])["input_ids"]
    sources, targets, truncated = [], [], 0
    for s, t in zip(src, tgt):
        s, cut_s = _cut(s, max_source, eos)
        t, cut_t = _cut(t, max_target, eos)
        truncated += cut_s or cut_t
        sources.append(s)
        targets.append(t)
    if truncated:
        log.warning("truncated %d of %d examples to %d source / %d target tokens", truncated, len(records),
                    max_source, max_target)
    round_up = lambda n, limit: min(limit, 32 * math.ceil(n / 32))
    return Examples(sources, targets, truncated, round_up(max(map(len, sources)), max_source),
                    round_up(max(map(len, targets)), max_target))


def pad_batch(examples: Examples, index: np.ndarray, start_id: int = 0) -> dict[str, np.ndarray]:
    """input_ids / attention_mask / decoder_input_ids (targets shifted right) / labels."""
    n = len(index)
    ids = np.zeros((n, examples.source_length), np.int32)
    labels = np.full((n, examples.target_length), IGNORE, np.int32)
    for row, i in enumerate(index):
        s, t = examples.sources[i], examples.targets[i]
        ids[row, : len(s)] = s
        labels[row, : len(t)] = t
    decoder_input = np.concatenate([np.full((n, 1), start_id, np.int32), np.maximum(labels[:, :-1], 0)], axis=1)
    return {"input_ids": ids, "attention_mask": ids != 0, "decoder_input_ids": decoder_input, "labels": labels}


def epoch_batches(examples: Examples, batch_size: int, seed: int, epoch: int) -> Iterator[np.ndarray]:
    """Index arrays of one epoch, shuffled by (seed, epoch); the last partial batch is dropped."""
    order = np.random.default_rng([seed, epoch]).permutation(len(examples.sources))
    for start in range(0, len(order) - batch_size + 1, batch_size):
        yield order[start : start + batch_size]
