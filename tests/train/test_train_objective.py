"""The task-balanced objective: each loss normalization equals a hand-computed value, packed rows
give the same objective as unpacked ones, and task mixing draws the tasks at the asked rates."""

import jax.numpy as jnp
import numpy as np
import pytest

from chatcell_jax.train import data as data_lib
from chatcell_jax.train import packing
from chatcell_jax.train.loss import loss_weights, token_loss_sums

IGNORE = data_lib.IGNORE
ANNOTATION, RANDOM = data_lib.task_slot("annotation"), data_lib.task_slot("random_generation")


def _batch(seed: int = 0):
    """Three examples: a 2-token annotation answer, a 5-token and a 3-token gene list."""
    rng = np.random.default_rng(seed)
    labels = np.full((3, 6), IGNORE, np.int32)
    lengths, tasks = [2, 5, 3], [ANNOTATION, RANDOM, RANDOM]
    for row, n in enumerate(lengths):
        labels[row, :n] = rng.integers(3, 11, n)
    logits = rng.normal(size=(3, 6, 16)).astype(np.float32)
    label_tasks = np.repeat(np.array(tasks, np.int32)[:, None], 6, axis=1)
    return logits, labels, label_tasks, lengths, tasks


def _nll(logits, labels):
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return -np.take_along_axis(log_p, np.maximum(labels, 0)[..., None], -1)[..., 0]


def _objective(logits, labels, label_tasks, normalization, task_weights=None, segments=None):
    batch = {"labels": jnp.asarray(labels), "label_tasks": jnp.asarray(label_tasks)}
    if segments is not None:
        batch["decoder_segment_ids"] = jnp.asarray(segments)
    weights = np.ones(data_lib.TASK_SLOTS, np.float32) if task_weights is None else task_weights
    w, denominator = loss_weights(batch, normalization, jnp.asarray(weights))
    sums = token_loss_sums(jnp.asarray(logits), jnp.asarray(labels), 16, weights=w, label_tasks=batch["label_tasks"])
    return float(sums["objective"] / denominator), sums


def test_each_normalization_equals_the_hand_computed_value():
    logits, labels, label_tasks, lengths, _ = _batch()
    nll = _nll(logits, labels)
    per_example = [nll[row, :n] for row, n in enumerate(lengths)]
    token_mean = np.concatenate(per_example).mean()
    example_mean = np.mean([e.mean() for e in per_example])
    annotation, random_mean = per_example[0].mean(), np.mean([per_example[1].mean(), per_example[2].mean()])
    weights = np.ones(data_lib.TASK_SLOTS, np.float32)
    weights[ANNOTATION] = 3.0

    got, sums = _objective(logits, labels, label_tasks, "tokens")
    np.testing.assert_allclose(got, token_mean, rtol=1e-6)
    np.testing.assert_allclose(float(sums["ce"] / sums["tokens"]), token_mean, rtol=1e-6)  # the logged loss
    np.testing.assert_allclose(_objective(logits, labels, label_tasks, "examples")[0], example_mean, rtol=1e-6)
    np.testing.assert_allclose(
        _objective(logits, labels, label_tasks, "tasks")[0], (annotation + random_mean) / 2, rtol=1e-6
    )
    np.testing.assert_allclose(
        _objective(logits, labels, label_tasks, "tasks", weights)[0], (3 * annotation + random_mean) / 4, rtol=1e-6
    )
    # The three differ on this batch, so each test above pins its own rule.
    assert len({round(v, 4) for v in (token_mean, example_mean, (annotation + random_mean) / 2)}) == 3
    # Per-task sums for the per-task losses.
    np.testing.assert_allclose(
        float(sums["task_ce"][ANNOTATION] / sums["task_tokens"][ANNOTATION]), annotation, rtol=1e-6
    )
    assert float(sums["task_tokens"][RANDOM]) == 8


def test_packed_rows_give_the_same_objective():
    """Examples sharing a row (segments 1, 2): every normalization is unchanged."""
    logits, labels, label_tasks, lengths, tasks = _batch()
    rows = {"input_ids": np.ones((3, 4), np.int32), "labels": labels, "tasks": np.array(tasks, np.int32)}
    packed = packing.pack_rows(rows, max_source=8, max_target=8, n_rows=2, decoder_start_id=0)
    bins = packing.assign_rows(np.full(3, 4), np.array(lengths), 8, 8)
    assert bins == [[0, 1], [2]]
    packed_logits = np.zeros((2, 8, 16), np.float32)
    for row, members in enumerate(bins):
        at = 0
        for i in members:
            packed_logits[row, at : at + lengths[i]] = logits[i, : lengths[i]]
            at += lengths[i]
    for mode in ("tokens", "examples", "tasks"):
        alone = _objective(logits, labels, label_tasks, mode)[0]
        together = _objective(
            packed_logits, packed["labels"], packed["label_tasks"], mode, segments=packed["decoder_segment_ids"]
        )[0]
        np.testing.assert_allclose(together, alone, rtol=1e-6, err_msg=mode)


def test_a_task_missing_from_the_batch_drops_out_of_the_weights():
    logits, labels, label_tasks, lengths, _ = _batch()
    only_random = labels.copy()
    only_random[0] = IGNORE
    nll = _nll(logits, labels)
    expected = np.mean([nll[1, :5].mean(), nll[2, :3].mean()])
    np.testing.assert_allclose(_objective(logits, only_random, label_tasks, "tasks")[0], expected, rtol=1e-6)


def _records(counts: dict[str, int]) -> list[dict]:
    return [{"task": task, "source": f"{task} {i}", "target": "x"} for task, n in counts.items() for i in range(n)]


def test_task_rates():
    records = _records({"annotation": 3, "random_generation": 30})
    assert data_lib.task_rates(records, "proportional") is None
    assert data_lib.task_rates(records, "uniform") == {"random_generation": 1.0, "annotation": 1.0}
    assert data_lib.task_rates(records, {"annotation": 2}) == {"annotation": 2.0}
    # A task the data does not have is ignored (one config serves several data sets).
    assert data_lib.task_rates(records, {"annotation": 2, "drug_sensitivity": 1}) == {"annotation": 2.0}
    with pytest.raises(data_lib.InputError, match="positive rate"):
        data_lib.task_rates(records, {"annotation": 0, "drug_sensitivity": 1})


def test_uniform_sampling_balances_batches_and_is_seeded():
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    records = _records({"annotation": 3, "random_generation": 30})
    sharding = NamedSharding(Mesh(np.array(jax.devices()[:1]), ("data",)), PartitionSpec("data"))

    class Tokenizer:  # one id per word, enough to count tasks
        eos_token_id = 1

        def __call__(self, texts):
            return {"input_ids": [[5 + len(t) % 7, 1] for t in texts]}

    shapes = data_lib.Shapes(8, 4)
    draws = {}
    for seed in (0, 0, 1):
        batches = data_lib.train_batches(
            records, Tokenizer(), sharding, 8, shapes, seed, threads=1, task_sampling="uniform"
        )
        tasks = np.concatenate([np.asarray(next(batches)["label_tasks"])[:, 0] for _ in range(5)])
        draws.setdefault(seed, []).append(tasks)
        assert np.sum(tasks == ANNOTATION) == 20 and np.sum(tasks == RANDOM) == 20  # 1:1, not 1:10
    assert np.array_equal(draws[0][0], draws[0][1])


def test_decoder_input_dropout_hides_part_of_the_prefix_but_never_a_start():
    import jax

    from chatcell_jax.train.step import drop_decoder_inputs

    inputs = np.tile(np.arange(0, 40, dtype=np.int32), (64, 1))  # id 0 (the start) at position 0
    inputs[:, 20] = 0  # a packed segment's start
    batch = {"decoder_input_ids": jnp.asarray(inputs)}
    out = np.asarray(drop_decoder_inputs(batch, jax.random.key(0), 0.3, 0, 2)["decoder_input_ids"])
    dropped = out != inputs
    assert not dropped[:, [0, 20]].any()
    assert np.all(out[dropped] == 2)
    assert 0.25 < dropped.mean() / (38 / 40) < 0.35
    again = np.asarray(drop_decoder_inputs(batch, jax.random.key(0), 0.3, 0, 2)["decoder_input_ids"])
    assert np.array_equal(out, again)
