"""The input pipeline: instruction records -> tokenised, padded, globally sharded batches (grain).

Order first, text later. A grain `MapDataset` of record *indices* is shuffled with the run's
seed (a new permutation every epoch), repeated forever and cut into global batches of
`batch_size` indices. Each process then keeps only the rows its devices hold in the global batch,
and tokenises just those. So the batch at step k is the same set of examples, in the same row
order, whether one process or many read it, and resuming needs only grain's iterator state (how
many batches were consumed), which goes into every checkpoint.

Rows are truncated to the maximum lengths (the last kept token replaced by EOS) and counted.
Padding is either to the batch's longest row rounded up to `bucket_multiple` (agreed across
processes, so the global array has one shape), or always to the maxima (one compilation), or
packed: the step's examples share rows (`chatcell_jax.train.packing`), fewer rows, same loss.
`jax.make_array_from_process_local_data` assembles the global arrays.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grain
import jax
import numpy as np
from jax.sharding import NamedSharding

from chatcell_jax.errors import InputError
from chatcell_jax.singlecell.records import load_split
from chatcell_jax.singlecell.tasks import NAMES as TASKS
from chatcell_jax.train import packing

log = logging.getLogger(__name__)

IGNORE = packing.IGNORE  # label id the loss skips, as in Hugging Face
Batch = dict[str, Any]
# Every target token carries its task's slot (`label_tasks`), for the task-balanced loss and the
# per-task losses; records of a task we do not know share the last slot.
TASK_NAMES = (*TASKS, "other")
TASK_SLOTS = len(TASK_NAMES)


def task_slot(task: str | None) -> int:
    return TASK_NAMES.index(task) if task in TASKS else TASK_SLOTS - 1


def _task_of(record: dict) -> str:
    """The record's task name ("other" when it has none), for sampling and interleaving."""
    return record.get("task") or "other"


@dataclass(frozen=True)
class Shapes:
    """Token limits and how batches are padded."""

    max_source: int
    max_target: int
    padding: str = "bucket"  # "bucket" | "max" | "pack" (see chatcell_jax.train.packing)
    bucket_multiple: int = 64
    decoder_start_id: int = 0

    def bucket(self, longest: int, limit: int) -> int:
        if self.padding in ("max", "pack"):
            return limit
        return min(limit, self.bucket_multiple * max(1, math.ceil(longest / self.bucket_multiple)))


def load_records(data_dir: str, split: str) -> list[dict]:
    """Records of one split; a missing or empty split is an InputError naming the directory."""
    records = load_split(data_dir, split)
    if not records:
        raise InputError(f"{data_dir}: the {split} split has no records; re-run `chatcell prepare`")
    return records


# --- tokenisation -----------------------------------------------------------------------------------


def _truncate(ids: list[int], limit: int, eos: int) -> tuple[list[int], bool]:
    """At most `limit` ids, still ending in EOS, so the model learns to stop."""
    if len(ids) <= limit:
        return ids, False
    return ids[: limit - 1] + [eos], True


class TokenizeRows:
    """Index rows -> fixed-size arrays at the maximum lengths (cropped to a bucket later).

    Rows with index -1 are filler (the padded tail of the last validation batch): all padding,
    no labels, so they weigh nothing in the loss.
    """

    def __init__(self, records: Sequence[dict], tokenizer, shapes: Shapes):
        self.records, self.tokenizer, self.shapes = records, tokenizer, shapes

    def __call__(self, index: np.ndarray) -> Batch:
        s = self.shapes
        n = len(index)
        real = [int(i) for i in index if i >= 0]
        sources = self.tokenizer([self.records[i]["source"] for i in real])["input_ids"] if real else []
        targets = self.tokenizer([self.records[i]["target"] for i in real])["input_ids"] if real else []
        input_ids = np.zeros((n, s.max_source), np.int32)
        labels = np.full((n, s.max_target), IGNORE, np.int32)
        tasks = np.full((n,), TASK_SLOTS - 1, np.int32)
        tasks[: len(real)] = [task_slot(self.records[i].get("task")) for i in real]
        truncated = 0
        eos = self.tokenizer.eos_token_id
        for row, (src, tgt) in enumerate(zip(sources, targets)):
            src, cut_s = _truncate(src, s.max_source, eos)
            tgt, cut_t = _truncate(tgt, s.max_target, eos)
            truncated += cut_s or cut_t
            input_ids[row, : len(src)] = src
            labels[row, : len(tgt)] = tgt
        return {
            "input_ids": input_ids,
            "labels": labels,
            "tasks": tasks,
            "truncated": np.int64(truncated),
            "examples": np.int64(len(real)),
        }


def finish_batch(rows: Batch, source_len: int, target_len: int, decoder_start_id: int) -> dict[str, np.ndarray]:
    """Crop to the bucket and add the mask, the teacher-forcing decoder inputs (labels shifted
    right behind the start id, HF's `_shift_right`) and every target token's task slot."""
    input_ids = rows["input_ids"][:, :source_len]
    labels = rows["labels"][:, :target_len]
    start = np.full((labels.shape[0], 1), decoder_start_id, np.int32)
    decoder_input_ids = np.concatenate([start, np.maximum(labels[:, :-1], 0)], axis=1)
    label_tasks = np.ascontiguousarray(np.broadcast_to(rows["tasks"][:, None], labels.shape), np.int32)
    return {
        "input_ids": input_ids,
        "attention_mask": (input_ids != 0).astype(np.int32),
        "decoder_input_ids": decoder_input_ids,
        "labels": labels,
        "label_tasks": label_tasks,
    }


# --- which rows of a global batch this process holds -----------------------------------------------


def local_rows(sharding: NamedSharding, global_batch: int) -> tuple[int, int]:
    """[start, stop) of the global batch's rows on this process's devices (one contiguous block)."""
    index_map = sharding.addressable_devices_indices_map((global_batch,))
    slices = {idx[0].indices(global_batch)[:2] for idx in index_map.values()}
    start, stop = min(s for s, _ in slices), max(e for _, e in slices)
    covered = sum(e - s for s, e in slices)
    if covered != stop - start:
        raise InputError(
            f"this process's devices hold non-contiguous batch rows {sorted(slices)}; order the mesh "
            "devices by process (the default of make_mesh)"
        )
    return start, stop


def _local_shards(sharding: NamedSharding, global_batch: int) -> int:
    """How many distinct row blocks of the batch this process's devices hold."""
    index_map = sharding.addressable_devices_indices_map((global_batch,))
    return len({idx[0].indices(global_batch)[:2] for idx in index_map.values()})


def _global_max(values: np.ndarray) -> np.ndarray:
    """Element-wise max over processes (one small collective when there are several)."""
    if jax.process_count() == 1:
        return values
    from jax.experimental import multihost_utils

    return np.max(np.asarray(multihost_utils.process_allgather(values)), axis=0)


# --- the training and evaluation streams -------------------------------------------------------------


def _read_options(threads: int) -> grain.ReadOptions:
    return grain.ReadOptions(num_threads=threads, prefetch_buffer_size=max(2, 2 * threads))


class GlobalBatches:
    """Iterator of global batches (dicts of jax.Arrays sharded by `sharding`).

    `get_state` / `set_state` expose grain's iterator state, so `grain.checkpoint.CheckpointSave`
    (and so Orbax) can store and restore the position exactly. `truncated` counts truncated rows
    this process produced so far.
    """

    def __init__(
        self, dataset: grain.MapDataset, sharding: NamedSharding, global_batch: int, shapes: Shapes, threads: int
    ):
        self._iter = iter(dataset.to_iter_dataset(_read_options(threads)))
        self.sharding, self.global_batch, self.shapes = sharding, global_batch, shapes
        start, stop = local_rows(sharding, global_batch)
        self.process_blocks = global_batch // (stop - start)  # equal blocks of rows, one per process
        self.local_shards = _local_shards(sharding, global_batch)
        self.truncated = 0
        self.examples = 0

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        rows = next(self._iter)
        self.truncated += int(rows["truncated"])
        self.examples += int(rows["examples"])
        s = self.shapes
        if s.padding == "pack":
            local = self._pack(rows)
        else:
            longest = np.array([_longest(rows["input_ids"] != 0), _longest(rows["labels"] != IGNORE)])
            source_len, target_len = _global_max(longest)
            local = finish_batch(
                rows,
                s.bucket(int(source_len), s.max_source),
                s.bucket(int(target_len), s.max_target),
                s.decoder_start_id,
            )
        global_rows = len(local["input_ids"]) * self.process_blocks
        return {
            k: jax.make_array_from_process_local_data(self.sharding, v, (global_rows,) + v.shape[1:])
            for k, v in local.items()
        }

    def _pack(self, rows: Batch) -> dict[str, np.ndarray]:
        """This process's examples packed into as many rows as the fullest process needs (every
        process must contribute the same number), rounded up to a quarter of the examples in whole
        device shards: at most four row counts, so at most four compilations of the step."""
        s = self.shapes
        needed = _global_max(np.array([packing.rows_needed(rows, s.max_source, s.max_target)]))[0]
        quarter = math.ceil(math.ceil(len(rows["input_ids"]) / 4) / self.local_shards) * self.local_shards
        n_rows = max(1, math.ceil(int(needed) / quarter)) * quarter
        return packing.pack_rows(rows, s.max_source, s.max_target, n_rows, s.decoder_start_id)

    @property
    def grain_iterator(self) -> grain.DatasetIterator:
        """The underlying grain iterator (what `grain.checkpoint.CheckpointSave` stores)."""
        return self._iter

    def get_state(self) -> dict:
        return self._iter.get_state()

    def set_state(self, state: dict) -> None:
        self._iter.set_state(state)


def _longest(mask: np.ndarray) -> int:
    """Length up to the last True of any row (0 for an all-False batch)."""
    if not mask.any():
        return 1
    return int(mask.shape[1] - np.argmax(mask[:, ::-1], axis=1)[mask.any(axis=1)].min())


def train_batches(
    records: Sequence[dict],
    tokenizer,
    sharding: NamedSharding,
    batch_size: int,
    shapes: Shapes,
    seed: int,
    shuffle: bool = True,
    threads: int = 2,
    task_sampling: str | dict[str, float] = "proportional",
) -> GlobalBatches:
    """Endless global training batches; epoch e is a permutation seeded by (seed, e).

    `task_sampling` (see `task_rates`): `proportional` draws records as they come (each task as
    often as it has records); otherwise every task is its own seeded, reshuffled stream and the
    streams are interleaved at fixed rates (grain's deterministic `mix`), so a batch holds the
    tasks in those proportions and the position is still one index that a checkpoint restores."""
    if len(records) < batch_size:
        raise InputError(f"batch_size {batch_size} exceeds the {len(records)} training examples; lower batch_size")
    rates = task_rates(records, task_sampling)
    if rates is None:
        order = grain.MapDataset.range(len(records))
        order = (order.seed(seed).shuffle() if shuffle else order).repeat()
    else:
        order = grain.MapDataset.mix(
            [_task_stream(records, task, seed, shuffle) for task in rates], list(rates.values())
        )
    start, stop = local_rows(sharding, batch_size)
    dataset = (
        order.batch(batch_size, drop_remainder=True)
        .map(lambda index: index[start:stop])
        .map(TokenizeRows(records, tokenizer, shapes))
    )
    return GlobalBatches(dataset, sharding, batch_size, shapes, threads)


def task_rates(records: Sequence[dict], sampling: str | dict[str, float]) -> dict[str, float] | None:
    """{task: relative rate} of the tasks that are drawn (None: proportional to their records).

    `uniform` gives every task of the data the same rate; a mapping gives the rates by name (a
    config serves several data sets, so a task the data does not have is ignored, logged), and a
    task of the data that it leaves out is never drawn (logged)."""
    if sampling == "proportional":
        return None
    present = sorted({_task_of(r) for r in records}, key=task_slot)
    if sampling == "uniform":
        return {task: 1.0 for task in present}
    if not isinstance(sampling, dict):
        raise InputError(f"task_sampling must be proportional, uniform or a mapping {{task: rate}}, got {sampling!r}")
    absent = sorted(set(sampling) - set(present))
    if absent:
        log.info("task_sampling names task(s) %s that the training data does not have; ignored", absent)
    rates = {task: float(sampling[task]) for task in present if float(sampling.get(task, 0.0)) > 0}
    if not rates:
        raise InputError(f"task_sampling {sampling!r} gives none of the data's tasks {present} a positive rate")
    left_out = [task for task in present if task not in rates]
    if left_out:
        log.warning("task_sampling leaves out task(s) %s: their records are never drawn", left_out)
    return rates


def _task_stream(records: Sequence[dict], task: str, seed: int, shuffle: bool) -> grain.MapDataset:
    """Endless record indices of one task, reshuffled every pass (seeded by seed and the task)."""
    indices = np.array([i for i, r in enumerate(records) if _task_of(r) == task], np.int64)
    stream = grain.MapDataset.range(len(indices))
    if shuffle:
        stream = stream.seed(seed * TASK_SLOTS + task_slot(task)).shuffle()
    return stream.repeat().map(lambda position: indices[position])


def interleave_tasks(records: Sequence[dict]) -> list[dict]:
    """The records taken round-robin over their tasks (each task in file order), so the first
    batches of a validation split hold every task, even when the file lists them task by task."""
    by_task: dict[str, list[dict]] = {}
    for record in records:
        by_task.setdefault(_task_of(record), []).append(record)
    longest = max((len(group) for group in by_task.values()), default=0)
    return [group[i] for i in range(longest) for group in by_task.values() if i < len(group)]


def eval_batches(
    records: Sequence[dict],
    tokenizer,
    sharding: NamedSharding,
    batch_size: int,
    shapes: Shapes,
    max_batches: int = 0,
    threads: int = 2,
) -> GlobalBatches:
    """The split in file order, once; the last batch is filled with weightless rows."""
    n = len(records)
    count = math.ceil(n / batch_size) if max_batches == 0 else min(max_batches, math.ceil(n / batch_size))
    start, stop = local_rows(sharding, batch_size)

    def indices(k: int) -> np.ndarray:
        index = np.arange(k * batch_size, (k + 1) * batch_size)
        return np.where(index < n, index, -1)[start:stop]

    dataset = grain.MapDataset.range(count).map(indices).map(TokenizeRows(records, tokenizer, shapes))
    return GlobalBatches(dataset, sharding, batch_size, shapes, threads)
