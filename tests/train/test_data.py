"""The grain pipeline: truncation counted, per-epoch shuffles, buckets, exact iterator state, filler rows."""

import json

import jax
import numpy as np
import pytest
from transformers import AutoTokenizer

from chatcell_jax.errors import InputError
from chatcell_jax.model.sharding import batch_sharding, make_mesh
from chatcell_jax.train import data as D
from tests.helpers.train import prepare


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    data, tok = prepare(tmp_path_factory.mktemp("data"))
    return data, AutoTokenizer.from_pretrained(str(tok))


def _indices(batches, n):
    return [np.asarray(next(batches)["input_ids"]) for _ in range(n)]


def test_epochs_are_fresh_permutations_of_the_split(setup):
    data, tok = setup
    records = [{"source": f"s {i}", "target": "t"} for i in range(12)]
    sh = batch_sharding(make_mesh((1, 1, 1), jax.devices()[:1]))
    order = lambda seed: [
        tuple(r) for b in _indices(D.train_batches(records, tok, sh, 4, D.Shapes(8, 8), seed), 6) for r in b
    ]
    first = order(0)
    epochs = [first[:12], first[12:]]
    assert all(len(set(e)) == 12 for e in epochs)  # each epoch: every example once
    assert epochs[0] != epochs[1]  # reshuffled
    assert order(0) == first and order(1) != first  # seeded


def test_truncation_keeps_eos_and_is_counted(setup):
    _, tok = setup
    records = [
        {"source": " ".join(["CD74"] * 50), "target": " ".join(["FTL"] * 20)},
        {"source": "CD74", "target": "FTL"},
    ]
    rows = D.TokenizeRows(records, tok, D.Shapes(16, 8))(np.array([0, 1, -1]))
    assert int(rows["truncated"]) == 1 and int(rows["examples"]) == 2
    assert rows["input_ids"][0, 15] == tok.eos_token_id and rows["labels"][0, 7] == tok.eos_token_id
    assert (rows["input_ids"][2] == 0).all() and (rows["labels"][2] == D.IGNORE).all()  # filler row


def test_buckets_and_decoder_inputs(setup):
    data, tok = setup
    records = D.load_records(str(data), "train")
    sh = batch_sharding(make_mesh((2, 2, 2)))
    for padding, multiple in (("bucket", 16), ("max", 16)):
        batch = next(D.train_batches(records, tok, sh, 8, D.Shapes(96, 48, padding, multiple), 0))
        s, t = batch["input_ids"].shape[1], batch["labels"].shape[1]
        assert (s, t) == (96, 48) if padding == "max" else (s % 16 == 0 and t % 16 == 0 and s < 96)
        labels, dec = np.asarray(batch["labels"]), np.asarray(batch["decoder_input_ids"])
        assert (dec[:, 0] == 0).all() and (dec[:, 1:] == np.maximum(labels[:, :-1], 0)).all()
        assert batch["input_ids"].sharding.spec == jax.sharding.PartitionSpec(("data", "fsdp"))
        assert (np.asarray(batch["attention_mask"]) == (np.asarray(batch["input_ids"]) != 0)).all()


def test_iterator_state_resumes_exactly(setup):
    data, tok = setup
    records = D.load_records(str(data), "train")
    sh = batch_sharding(make_mesh((4, 1, 1), jax.devices()[:4]))
    make = lambda: D.train_batches(records, tok, sh, 8, D.Shapes(96, 48), 3)
    a = make()
    _indices(a, 3)
    state = json.loads(json.dumps(a.get_state()))
    expected = _indices(a, 2)
    b = make()
    b.set_state(state)
    assert all((x == y).all() for x, y in zip(expected, _indices(b, 2)))


def test_eval_batches_cover_the_split_once(setup):
    data, tok = setup
    records = D.load_records(str(data), "valid")
    sh = batch_sharding(make_mesh((8, 1, 1)))
    batches = list(D.eval_batches(records, tok, sh, 16, D.Shapes(96, 48)))
    assert len(batches) == -(-len(records) // 16)
    rows = sum(int((np.asarray(b["labels"]) != D.IGNORE).any(axis=1).sum()) for b in batches)
    assert rows == len(records)
    assert len(list(D.eval_batches(records, tok, sh, 16, D.Shapes(96, 48), max_batches=2))) == 2


def test_chatcell_json_lists_and_errors(setup, tmp_path):
    data, tok = setup
    items = [{"source": "Which cell type is this? CD74 FTL", "target": "B cell"}] * 3
    (tmp_path / "train.json").write_text(json.dumps(items))
    assert len(D.load_records(str(tmp_path), "train")) == 3
    with pytest.raises(InputError, match="no valid.jsonl"):
        D.load_records(str(tmp_path), "valid")
    sh = batch_sharding(make_mesh((1, 1, 1), jax.devices()[:1]))
    with pytest.raises(InputError, match="batch_size 4 exceeds the 3 training examples"):
        D.train_batches(items, tok, sh, 4, D.Shapes(8, 8), 0)
