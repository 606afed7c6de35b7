"""Packing: several (source, target) examples share one row, told apart by segment ids.

ChatCell's tasks mix long questions with short answers (annotation: ~130 source tokens, 2-5
target tokens) and short questions with long answers (generation: ~20 source, ~100 target), so
padding every row to the longest of each costs up to half the compute. Packing puts examples
into rows first-fit, in order, while both the source and the target still fit:

    input_ids            [ q1 q1 q1 q2 q2 0 ]    encoder_segment_ids [ 1 1 1 2 2 0 ]
    labels               [ a1 a1 a2 a2 a2 - ]    decoder_segment_ids [ 1 1 2 2 2 0 ]
    decoder_input_ids    [ s  a1 s  a2 a2 0 ]    (s = decoder start: each answer restarts)

Attention stays inside a segment (encoder, decoder and cross attention; see
`chatcell_jax.model.t5`). T5's position information is a bias on the *difference* of
positions, which is the same inside a packed segment as in a row of its own, so a packed example
gets the same logits as the example alone. The loss is a sum over label tokens, so a packed batch
of the same examples has the same loss: packing changes the cost of a step, not its result.

Segment 0 is padding. A step still holds `batch_size` examples; only its number of rows shrinks.
"""

from __future__ import annotations

import numpy as np

IGNORE = -100  # label id the loss skips, as in Hugging Face


def _lengths(rows: dict) -> tuple[np.ndarray, np.ndarray]:
    return (rows["input_ids"] != 0).sum(axis=1), (rows["labels"] != IGNORE).sum(axis=1)


def assign_rows(
    source_lengths: np.ndarray, target_lengths: np.ndarray, max_source: int, max_target: int
) -> list[list[int]]:
    """First fit, in order: the example indices of each packed row. Examples without target
    tokens (filler rows of an evaluation batch) are dropped: they weigh nothing."""
    bins: list[list[int]] = []
    free: list[list[int]] = []  # [source room, target room] per row
    for i, (s, t) in enumerate(zip(source_lengths.tolist(), target_lengths.tolist())):
        if t == 0:
            continue
        for row, room in enumerate(free):
            if s <= room[0] and t <= room[1]:
                bins[row].append(i)
                room[0] -= s
                room[1] -= t
                break
        else:
            bins.append([i])
            free.append([max_source - s, max_target - t])
    return bins


def pack_rows(rows: dict, max_source: int, max_target: int, n_rows: int, decoder_start_id: int) -> dict:
    """Per-example rows (input_ids [n, S], labels [n, T], padded) -> `n_rows` packed rows of
    model inputs with segment ids (rows beyond those the examples need stay empty)."""
    source_lengths, target_lengths = _lengths(rows)
    bins = assign_rows(source_lengths, target_lengths, max_source, max_target)
    if len(bins) > n_rows:
        raise ValueError(f"{len(bins)} packed rows needed, only {n_rows} allowed")
    out = {
        "input_ids": np.zeros((n_rows, max_source), np.int32),
        "encoder_segment_ids": np.zeros((n_rows, max_source), np.int32),
        "labels": np.full((n_rows, max_target), IGNORE, np.int32),
        "decoder_input_ids": np.zeros((n_rows, max_target), np.int32),
        "decoder_segment_ids": np.zeros((n_rows, max_target), np.int32),
        "label_tasks": np.zeros((n_rows, max_target), np.int32),
    }
    tasks = rows.get("tasks")
    for row, members in enumerate(bins):
        s_at = t_at = 0
        for segment, i in enumerate(members, start=1):
            s, t = int(source_lengths[i]), int(target_lengths[i])
            out["input_ids"][row, s_at : s_at + s] = rows["input_ids"][i, :s]
            out["encoder_segment_ids"][row, s_at : s_at + s] = segment
            target = rows["labels"][i, :t]
            out["labels"][row, t_at : t_at + t] = target
            out["decoder_input_ids"][row, t_at] = decoder_start_id
            out["decoder_input_ids"][row, t_at + 1 : t_at + t] = target[:-1]
            out["decoder_segment_ids"][row, t_at : t_at + t] = segment
            if tasks is not None:
                out["label_tasks"][row, t_at : t_at + t] = tasks[i]
            s_at, t_at = s_at + s, t_at + t
    out["attention_mask"] = (out["encoder_segment_ids"] != 0).astype(np.int32)
    return out


def rows_needed(rows: dict, max_source: int, max_target: int) -> int:
    """How many packed rows these examples take."""
    return len(assign_rows(*_lengths(rows), max_source, max_target))
