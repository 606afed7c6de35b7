"""`gene_init: svd`: gene rows from the training cells' gene matrix (chatcell_jax/train/gene_init.py)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from chatcell_jax.errors import InputError
from chatcell_jax.tokenizer import VOCAB_FILE
from chatcell_jax.train.gene_init import gene_token_ids, sentence_matrix, svd_rows, with_gene_rows

GROUP_A = [f"A{i}" for i in range(6)]
GROUP_B = [f"B{i}" for i in range(6)]
UNSEEN = "NEVERSEEN"


def _records(n: int = 40, seed: int = 0) -> list[dict]:
    """Cells of two programmes: each sentence is a shuffled subset of one group's genes."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        group = GROUP_A if i % 2 else GROUP_B
        genes = list(rng.permutation(group)[:4])
        records.append({"source": "Which cell type is this? " + " ".join(genes), "target": "T", "task": "annotation"})
    return records


@pytest.fixture
def tokenizer_dir(tmp_path):
    words = [*GROUP_A, *GROUP_B, UNSEEN, "T cell"]
    record = {"new_ids": {w: 10 + i for i, w in enumerate(words)}, "collisions": {}, "cell_types": ["T cell"]}
    (tmp_path / VOCAB_FILE).write_text(json.dumps(record))
    return tmp_path


def _cosine(rows: np.ndarray) -> np.ndarray:
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return unit @ unit.T


def test_gene_words_leave_out_cell_types_and_drugs(tokenizer_dir):
    genes = gene_token_ids(tokenizer_dir)
    assert "T cell" not in genes and genes["A0"] == 10 and len(genes) == 13


def test_genes_of_one_programme_start_closer_than_genes_of_two():
    sentences = [r["source"].split()[-4:] for r in _records()]
    columns = {w: j for j, w in enumerate([*GROUP_A, *GROUP_B])}
    matrix = sentence_matrix(sentences, columns)
    assert matrix[0, columns[sentences[0][0]]] == 1.0 and matrix[0, columns[sentences[0][1]]] == pytest.approx(2**-0.5)
    similarity = _cosine(svd_rows(matrix, 8, seed=0))
    within = np.mean([similarity[i, j] for i in range(6) for j in range(6) if i != j])
    across = similarity[:6, 6:].mean()
    assert within > across + 0.3  # (2 dimensions: 0.999 against -0.79)


def test_only_seen_gene_rows_change_and_keep_the_tables_scale(tokenizer_dir):
    table = jax.random.normal(jax.random.key(0), (32, 8), jnp.float32)
    params, replaced = with_gene_rows({"shared": table}, _records(), tokenizer_dir, seed=0)
    new, old = np.asarray(params["shared"]), np.asarray(table)
    genes = gene_token_ids(tokenizer_dir)
    seen = [genes[w] for w in GROUP_A + GROUP_B]
    assert replaced == 12
    untouched = [i for i in range(32) if i not in seen]  # specials, the unseen gene, the cell type
    np.testing.assert_array_equal(new[untouched], old[untouched])
    assert not np.allclose(new[seen], old[seen])
    np.testing.assert_allclose(np.sqrt(np.mean(new[seen] ** 2)), np.sqrt(np.mean(old[seen] ** 2)), rtol=1e-5)
    again, _ = with_gene_rows({"shared": table}, _records(), tokenizer_dir, seed=0)
    np.testing.assert_array_equal(np.asarray(again["shared"]), new)


def test_a_sharded_table_gets_the_same_rows_and_keeps_its_sharding(tokenizer_dir):
    mesh = Mesh(np.asarray(jax.devices()[:4]).reshape(4), ("model",))
    table = jax.random.normal(jax.random.key(0), (32, 8), jnp.float32)
    sharded = jax.device_put(table, NamedSharding(mesh, PartitionSpec("model", None)))
    want, _ = with_gene_rows({"shared": table}, _records(), tokenizer_dir, seed=0)
    got, _ = with_gene_rows({"shared": sharded}, _records(), tokenizer_dir, seed=0)
    assert got["shared"].sharding == sharded.sharding
    np.testing.assert_array_equal(np.asarray(got["shared"]), np.asarray(want["shared"]))


def test_records_without_the_tokenizers_genes_are_a_named_error(tokenizer_dir, tmp_path):
    records = [{"source": "no genes here", "target": "T", "task": "annotation"}]
    with pytest.raises(InputError, match="fewer than 2"):
        with_gene_rows({"shared": jnp.zeros((32, 8))}, records, tokenizer_dir, seed=0)
    with pytest.raises(InputError, match="gene_init=model"):
        gene_token_ids(tmp_path / "missing")
