"""The adapted tokenizer: one token per gene, exact round trips, stable ids, reproducible bytes."""

import dataclasses
import json

import pytest
from transformers import AutoTokenizer

from chatcell_jax.errors import InputError
from chatcell_jax.singlecell import prepare as ins
from chatcell_jax.singlecell.manifest import Labels, Manifest
from chatcell_jax.singlecell.records import load_split
from chatcell_jax.tokenizer import build_tokenizer, check_covers, train_base, uncovered_words, words_from_manifest


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    manifest = ins.prepare_dataset(root / "data", cells_input=ins.demo_data_path())
    record = build_tokenizer(root / "data", root / "tok")
    return root, manifest, record, AutoTokenizer.from_pretrained(str(root / "tok"))


def test_one_token_per_gene_on_the_bundled_pbmc_data(built):
    root, manifest, record, tok = built
    assert record["n_new"] == len(manifest.genes) + 10  # 751 genes + 10 cell types
    sentences = [
        r["target"]
        for s in ("train", "valid", "test")
        for r in load_split(root / "data", s)
        if r["task"] != "annotation"
    ]
    for sentence in sentences:
        ids = tok(sentence)["input_ids"]
        assert len(ids) == len(sentence.split()) + 1 == 101  # 100 genes + EOS
        assert tok.decode(ids, skip_special_tokens=True) == sentence
    assert not any(t == "\u2581" for s in sentences[:20] for t in tok.convert_ids_to_tokens(tok(s)["input_ids"]))


def test_instructions_round_trip_and_labels_are_single_tokens(built):
    root, manifest, _, tok = built
    for record in load_split(root / "data", "test"):
        ids = tok(record["source"])["input_ids"]
        assert ids[-1] == 1 and tok.decode(ids, skip_special_tokens=True) == record["source"]
    for label in manifest.labels.cell_type:
        assert len(tok(label)["input_ids"]) == 2, label  # the label + EOS


def test_t5_layout_and_reload(built):
    root, _, record, tok = built
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert type(tok).__name__ != "T5Tokenizer" and tok.is_fast
    again = AutoTokenizer.from_pretrained(str(root / "tok"))
    text = load_split(root / "data", "valid")[0]["source"]
    assert again(text)["input_ids"] == tok(text)["input_ids"]
    saved = json.loads((root / "tok" / "chatcell_vocab.json").read_text())
    assert saved["first_new_id"] == record["base_vocab_size"] and len(tok) == saved["vocab_size"]


def test_built_twice_is_byte_identical(built, tmp_path):
    root, *_ = built
    build_tokenizer(root / "data", tmp_path / "again")
    for name in ("tokenizer.json", "tokenizer_config.json", "chatcell_vocab.json"):
        assert (tmp_path / "again" / name).read_bytes() == (root / "tok" / name).read_bytes()


def test_extending_a_base_keeps_every_base_id(built, tmp_path):
    root, manifest, _, _ = built
    base_dir = tmp_path / "base"
    import json as _json

    from chatcell_jax.tokenizer import _wrap

    spec = _json.loads(train_base(["the quick brown fox", "CD74 is a gene", "a cell of some type"] * 50, 200).to_str())
    _wrap(spec).save_pretrained(str(base_dir))
    base = AutoTokenizer.from_pretrained(str(base_dir))
    record = build_tokenizer(root / "data", tmp_path / "ext", base=str(base_dir))
    ext = AutoTokenizer.from_pretrained(str(tmp_path / "ext"))
    base_vocab = base.get_vocab()
    assert all(ext.convert_tokens_to_ids(piece) == i for piece, i in base_vocab.items())
    assert record["base_vocab_size"] == len(base_vocab)
    assert min(record["new_ids"].values()) == len(base_vocab)
    gene = next(iter(manifest.genes))
    assert len(ext(gene)["input_ids"]) == 2


def test_unknown_genes_are_found_and_decode_back(built):
    *_, tok = built
    assert uncovered_words(tok, ["CD74", "NOTAGENE42", "FTL"]) == ["NOTAGENE42"]
    assert tok.decode(tok("CD74 NOTAGENE42")["input_ids"], skip_special_tokens=True) == "CD74 NOTAGENE42"


def test_bad_input(tmp_path, built):
    with pytest.raises(InputError, match="whitespace or control"):
        words_from_manifest(Manifest(sources=(), labels=Labels(), genes={"BAD GENE": 1}, dataset_genes=(), counts={}))
    with pytest.raises(InputError, match="no genes, cell types or drugs"):
        words_from_manifest(Manifest(sources=(), labels=Labels(), genes={}, dataset_genes=(), counts={}))
    (tmp_path / "notok").mkdir()
    root, *_ = built
    with pytest.raises(InputError, match="cannot load a tokenizer"):
        build_tokenizer(root / "data", tmp_path / "x", base=str(tmp_path / "notok"))
    with pytest.raises(InputError, match="already exists"):
        build_tokenizer(root / "data", root / "tok")


def test_a_tokenizer_of_other_data_is_a_named_error(built):
    """`chatcell train` checks the tokenizer against the data's manifest (issue 15)."""
    root, manifest, _, tok = built
    check_covers(tok, manifest, root / "tok")  # its own data: every word is one token
    other = dataclasses.replace(manifest, genes={**manifest.genes, "NOTAGENE42": 1, "NOTAGENE43": 1})
    with pytest.raises(InputError, match=r"does not hold 2 of the data's \d+ genes .*NOTAGENE42.*chatcell tokenizer"):
        check_covers(tok, other, root / "tok")
