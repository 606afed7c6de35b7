"""Packed rows: layout, the same logits per example as unpacked, and the same training losses."""

import jax
import numpy as np
import pytest

from chatcell_jax.model import t5 as t5_fn
from chatcell_jax.model.params import init_params
from chatcell_jax.train import packing
from tests.helpers.model import config

IGNORE = packing.IGNORE


def _rows(examples: list[tuple[list[int], list[int]]], s: int = 12, t: int = 8) -> dict:
    """Per-example padded rows, as `data.TokenizeRows` makes them."""
    input_ids = np.zeros((len(examples), s), np.int32)
    labels = np.full((len(examples), t), IGNORE, np.int32)
    for i, (src, tgt) in enumerate(examples):
        input_ids[i, : len(src)], labels[i, : len(tgt)] = src, tgt
    return {"input_ids": input_ids, "labels": labels}


def test_first_fit_layout_and_decoder_inputs():
    rows = _rows([([5, 6, 7, 1], [8, 1]), ([9, 1], [10, 11, 12, 1]), ([13] * 7 + [1], [14, 1]), ([2, 1], [])])
    assert packing.assign_rows(*packing._lengths(rows), 12, 8) == [[0, 1], [2]]  # [2] does not fit row 0; [3] empty
    out = packing.pack_rows(rows, 12, 8, 4, decoder_start_id=0)
    assert out["input_ids"].shape == (4, 12) and not out["input_ids"][2:].any()
    np.testing.assert_array_equal(out["input_ids"][0, :6], [5, 6, 7, 1, 9, 1])
    np.testing.assert_array_equal(out["encoder_segment_ids"][0], [1, 1, 1, 1, 2, 2] + [0] * 6)
    np.testing.assert_array_equal(out["labels"][0, :6], [8, 1, 10, 11, 12, 1])
    np.testing.assert_array_equal(out["decoder_input_ids"][0, :6], [0, 8, 0, 10, 11, 12])  # each answer restarts
    np.testing.assert_array_equal(out["decoder_segment_ids"][0], [1, 1, 2, 2, 2, 2, 0, 0])
    np.testing.assert_array_equal(out["attention_mask"], out["encoder_segment_ids"] != 0)
    assert (out["labels"][1:] != IGNORE).sum() == 2 and (out["labels"] != IGNORE).sum() == 8  # every label kept
    with pytest.raises(ValueError, match="3 packed rows needed"):
        packing.pack_rows(_rows([([3] * 10, [4] * 6)] * 3), 12, 8, 2, 0)


@pytest.mark.parametrize("kind", ["v1.0", "v1.1"])
def test_packed_examples_get_their_unpacked_logits(kind):
    cfg = config(kind)
    params = init_params(cfg, jax.random.key(0))
    rng = np.random.RandomState(1)
    examples = [
        (list(rng.randint(2, 99, n)) + [1], list(rng.randint(2, 99, m)) + [1])
        for n, m in [(6, 3), (9, 1), (4, 5), (13, 2)]
    ]  # 14 source tokens: positions reach the "far" buckets
    single = _rows(examples, 24, 12)
    packed = packing.pack_rows(single, 40, 12, 2, 0)
    assert (packed["encoder_segment_ids"].max(axis=1) > 1).any()  # several examples share a row
    logits = lambda b: np.asarray(
        t5_fn.forward(
            cfg,
            params,
            b["input_ids"],
            b["attention_mask"],
            b["decoder_input_ids"],
            encoder_segment_ids=b["encoder_segment_ids"],
            decoder_segment_ids=b["decoder_segment_ids"],
        )
    )
    # Reference: each example in a row of its own, the plain (unpacked) model inputs.
    for i, (src, tgt) in enumerate(examples):
        ids = np.array([src], np.int32)
        dec = np.array([[0] + tgt[:-1]], np.int32)
        ref = np.asarray(t5_fn.forward(cfg, params, ids, np.ones_like(ids), dec))[0]
        got = logits(packed)[_positions_of(packed, i, examples)]
        np.testing.assert_allclose(got, ref, atol=2e-5, rtol=0, err_msg=f"example {i}")


def _positions_of(packed: dict, i: int, examples) -> np.ndarray:
    """Mask [rows, T] of example i's decoder positions in the packed batch."""
    bins = packing.assign_rows(*packing._lengths(_rows(examples, 24, 12)), 40, 12)
    row = next(r for r, members in enumerate(bins) if i in members)
    segment = bins[row].index(i) + 1
    mask = np.zeros_like(packed["decoder_segment_ids"], bool)
    mask[row] = packed["decoder_segment_ids"][row] == segment
    return mask


def test_packed_training_equals_padded_training(tmp_path):
    """Same examples per step, fewer rows: the losses of 3 steps agree (dropout off), on a (2,2,2) mesh."""
    from chatcell_jax.train import Trainer
    from chatcell_jax.train.config import load_config
    from chatcell_jax.train.data import train_batches
    from tests.helpers.train import SMALL, losses, prepare

    data, tok = prepare(tmp_path)
    rows = {}
    for padding in ("max", "pack"):  # max: one example per row, one compilation
        config = load_config(
            "configs/train/demo.yaml",
            [
                f"data={data}",
                f"tokenizer={tok}",
                f"out={tmp_path / padding}",
                "steps=3",
                "batch_size=16",
                "eval_every=0",
                "mesh=[2,2,2]",
                "dropout_rate=0",
                f"padding={padding}",
                *SMALL,
            ],
        )
        trainer = Trainer(config, progress=False)
        first = next(
            train_batches(
                trainer.train_records, trainer.tokenizer, trainer.batch_sharding, 16, trainer.shapes, config.seed
            )
        )  # a second stream: the run's stays unread
        rows[padding] = first["input_ids"].shape[0]
        trainer.run()
        rows[padding + "_losses"] = losses(tmp_path / padding)
    assert rows["pack"] < rows["max"] == 16 and rows["pack"] % 4 == 0  # whole shards of the 4 data devices
    np.testing.assert_allclose(
        [rows["pack_losses"][s] for s in (1, 2, 3)], [rows["max_losses"][s] for s in (1, 2, 3)], rtol=0, atol=1e-5
    )
