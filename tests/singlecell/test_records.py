"""Reading our JSONL and the published ChatCell-Instructions JSON."""

import json

import pytest

from chatcell_jax.errors import InputError
from chatcell_jax.singlecell.chatcell_json import convert_chatcell_instructions, embedded_sentence
from chatcell_jax.singlecell.records import load_split, read_chatcell_json, read_jsonl

GENES = "MALAT1 TMSB4X B2M RPL13 EEF1A1 ACTB CD74 FTL"
CHATCELL_STYLE = [
    {"source": f"Here is a cell: {GENES}. What is its type?", "target": "Basal cell"},
    {"source": "Produce the top genes of a Basal cell.", "target": GENES},
    {"source": "Produce the top genes of a cell.", "target": GENES},
    {"source": f"Drug erlotinib, genes {GENES}. Sensitive or resistant?", "target": "Sensitive"},
]


def write_chatcell(tmp_path):
    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.json").write_text(json.dumps(CHATCELL_STYLE))
    return tmp_path


def test_task_inference(tmp_path):
    path = write_chatcell(tmp_path) / "train.json"
    tasks = [(r["task"], r["label"]) for r in read_chatcell_json(path)]
    assert tasks == [
        ("annotation", "Basal cell"),
        ("pseudo_cell_generation", "Basal cell"),
        ("random_generation", ""),
        ("drug_sensitivity", "sensitive"),
    ]


def test_convert_directory(tmp_path):
    (tmp_path / "src").mkdir()
    src = write_chatcell(tmp_path / "src")
    manifest = convert_chatcell_instructions(src, tmp_path / "out")
    assert set(GENES.split()) == set(manifest.genes)
    assert manifest.labels.cell_type == ("Basal cell",)
    assert [r["task"] for r in load_split(tmp_path / "out", "valid")][0] == "annotation"
    assert len(list(read_jsonl(tmp_path / "out" / "test.jsonl"))) == 4


def test_embedded_sentence():
    assert embedded_sentence(f"Here is a cell: {GENES}. What is its type?") == GENES.split()
    assert embedded_sentence("No genes here, just words.") == []


def test_bad_files(tmp_path):
    (tmp_path / "x.json").write_text('{"source": 1}')
    with pytest.raises(InputError, match="JSON list"):
        read_chatcell_json(tmp_path / "x.json")
    (tmp_path / "y.jsonl").write_text('{"source": "a"}\n')
    with pytest.raises(InputError, match=r"y.jsonl:1 needs the string field\(s\) .source., .target."):
        list(read_jsonl(tmp_path / "y.jsonl"))
    with pytest.raises(InputError, match="no valid.jsonl"):
        load_split(tmp_path, "valid")
