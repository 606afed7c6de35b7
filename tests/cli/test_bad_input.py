"""The bad-input matrix of the CLI (issue 15): every case exits 2 with one line that names the
problem and the fix, and leaves no output behind. The web API's cases are in
tests/serve/test_web.py (test_bad_requests_are_4xx)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chatcell_jax.cli import main
from chatcell_jax.singlecell import prepare as ins
from chatcell_jax.singlecell.prepare import demo_data_path
from chatcell_jax.singlecell.records import load_split
from chatcell_jax.tokenizer import build_tokenizer
from tests.helpers.h5ad import random_counts, write_h5ad


@pytest.fixture(scope="module")
def inputs(trained_run, tmp_path_factory):
    """(run dir, prompts JSONL, a plain file) shared by the cases."""
    run, data = trained_run
    root = tmp_path_factory.mktemp("bad-input")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"source": r["source"]}) + "\n" for r in load_split(data, "test")[:2]))
    (root / "a-file").write_text("not a directory\n")
    write_h5ad(root / "unknown-genes.h5ad", random_counts(20, 40), genes=[f"NOTAGENE{i}" for i in range(40)])
    types = {"cell_type": ["B", "T"] * 10}
    write_h5ad(root / "empty-symbol.h5ad", random_counts(20, 40), genes=["", *[f"G{i}" for i in range(39)]], obs=types)
    write_h5ad(root / "newline-label.h5ad", random_counts(20, 40), obs={"cell_type": ["B\ncell", "T"] * 10})
    (root / "truncated.h5ad").write_bytes(demo_data_path().read_bytes()[:400_000])
    other = write_h5ad(root / "other.h5ad", random_counts(20, 40), genes=[f"OTHER{i}" for i in range(40)], obs=types)
    ins.prepare_dataset(root / "other-data", cells_input=other, options=ins.PrepareOptions(top_k=10))
    build_tokenizer(root / "other-data", root / "other-tokenizer")
    return run, prompts, root / "a-file"


def _generate(out: str, *extra: str) -> list[str]:
    return ["generate", "{run}", "--input", "{prompts}", "--out", out, "--no-progress", *extra]


# (argv with {run} {prompts} {file} {tmp} placeholders, words the one-line message must hold)
CASES = {
    "num-beams 0": (_generate("{tmp}/o.jsonl", "--num-beams", "0"), "num_beams (--num-beams) must be at least 1"),
    "max-new-tokens 0": (_generate("{tmp}/o.jsonl", "--max-new-tokens", "0"), "must be at least 1, got 0"),
    "top-p 2": (_generate("{tmp}/o.jsonl", "--mode", "sample", "--top-p", "2"), "top_p (--top-p) must be in (0, 1]"),
    "temperature 0": (_generate("{tmp}/o.jsonl", "--mode", "sample", "--temperature", "0"), "use mode greedy"),
    "seed beyond 64 bits": (_generate("{tmp}/o.jsonl", "--seed", str(2**64)), "seed (--seed) must be from 0"),
    "seed beyond 32 bits": (_generate("{tmp}/o.jsonl", "--seed", str(2**32)), "seed (--seed) must be from 0"),
    "more sequences than beams": (_generate("{tmp}/o.jsonl", "--num-return-sequences", "5"), "cannot exceed"),
    "sequences without beams": (
        _generate("{tmp}/o.jsonl", "--mode", "greedy", "--num-return-sequences", "2"),
        "above 1 needs mode beam",
    ),
    "min above max new tokens": (
        _generate("{tmp}/o.jsonl", "--min-new-tokens", "50", "--max-new-tokens", "10"),
        "min_new_tokens (--min-new-tokens) (50) cannot exceed",
    ),
    "batch-size 0": (_generate("{tmp}/o.jsonl", "--batch-size", "0"), "argument --batch-size: must be at least 1"),
    "out is the input": (_generate("{prompts}"), "is also an input"),
    "out under a file": (_generate("{file}/o.jsonl"), "is a file, so the output's folder cannot be made there"),
    "out unwritable": (_generate("/proc/chatcell-test/o.jsonl"), "cannot write in /proc"),
    "out is a directory": (_generate("{tmp}"), "is a directory; give a file name"),
    "annotate out is the input": (
        ["annotate", "{run}", str(demo_data_path()), "--out", str(demo_data_path())],
        "is also an input",
    ),
    "annotate out under a file": (
        ["annotate", "{run}", str(demo_data_path()), "--out", "{file}/x.h5ad"],
        "is a file, so the output's folder",
    ),
    "annotate cells of unknown genes": (
        ["annotate", "{run}", "{inputs}/unknown-genes.h5ad", "--out", "{tmp}/a.h5ad"],
        "none of the 40 genes of",
    ),
    "predict-drug of an unknown drug": (
        ["predict-drug", "{run}", str(demo_data_path()), "--drug", "Aspirin", "--out", "{tmp}/d.h5ad"],
        "unknown drug 'Aspirin'",
    ),
    "annotate a truncated file": (
        ["annotate", "{run}", "{inputs}/truncated.h5ad", "--out", "{tmp}/a.h5ad"],
        "cannot be opened as HDF5",
    ),
    "prepare a truncated file": (
        ["prepare", "{inputs}/truncated.h5ad", "--label-key", "cell_type", "--out", "{tmp}/data", "--no-progress"],
        "the file is damaged, copy it again",
    ),
    "prepare an empty gene symbol": (
        ["prepare", "{inputs}/empty-symbol.h5ad", "--label-key", "cell_type", "--out", "{tmp}/data", "--no-progress"],
        "1 gene symbol(s) in the var index are empty",
    ),
    "prepare a label with a line break": (
        ["prepare", "{inputs}/newline-label.h5ad", "--label-key", "cell_type", "--out", "{tmp}/data", "--no-progress"],
        "holds a line break or control character",
    ),
    "train with a tokenizer of other data": (
        ["train", "--no-progress", "--set", "data={data}", "--set", "tokenizer={inputs}/other-tokenizer"]
        + ["--set", "out={tmp}/run", "--set", "steps=1"],
        "it was built for other data; build it for this data with `chatcell tokenizer --data DATA_DIR`",
    ),
    "prepare chunk-size 0": (["prepare", "--demo", "--out", "{tmp}/data", "--chunk-size", "0"], "--chunk-size"),
    "prepare top-k abc": (["prepare", "--demo", "--out", "{tmp}/data", "--top-k", "abc"], "'abc' is not an integer"),
    "evaluate seed negative": (["evaluate", "{run}", "--data", "{tmp}", "--out", "{tmp}/e", "--seed", "-1"], "--seed"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(case, inputs, tmp_path, capsys):
    run, prompts, a_file = inputs
    argv, words = CASES[case]
    fill = dict(run=run, prompts=prompts, file=a_file, tmp=tmp_path, inputs=a_file.parent, data=run.parent / "data")
    before = sorted(tmp_path.rglob("*"))
    assert _exit_code([a.format(**fill) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1, err
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, not even a folder
    assert prompts.read_text().count("\n") == 2  # the input is untouched


def test_an_existing_output_needs_overwrite(inputs, tmp_path, capsys):
    run, prompts, _ = inputs
    out = tmp_path / "answers.jsonl"
    out.write_text("earlier answers\n")
    assert main([a.format(run=run, prompts=prompts) for a in _generate(str(out))]) == 2
    assert "already exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert out.read_text() == "earlier answers\n"
    assert main([a.format(run=run, prompts=prompts) for a in _generate(str(out), "--overwrite")]) == 0
    assert out.read_text().count("\n") == 2


def test_annotate_also_needs_overwrite_for_an_existing_output(inputs, tmp_path, capsys):
    run, _, _ = inputs
    out = tmp_path / "annotated.h5ad"
    out.write_bytes(b"an earlier output")
    assert main(["annotate", str(run), str(demo_data_path()), "--out", str(out), "--no-progress"]) == 2
    assert "already exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert out.read_bytes() == b"an earlier output"


def test_few_known_genes_are_reported_and_warned(inputs, tmp_path, capsys, caplog):
    """A file sharing only some genes with the model is annotated, with the overlap in the summary
    and a warning (the answers rest on the few genes the model can read)."""
    run, _, _ = inputs
    known = sorted(json.loads((Path(run) / "manifest.json").read_text())["genes"])[:5]
    genes = [*known, *[f"NOTAGENE{i}" for i in range(35)]]
    cells = write_h5ad(tmp_path / "cells.h5ad", random_counts(12, 40), genes=genes)
    out = tmp_path / "a.h5ad"
    assert main(["annotate", str(run), str(cells), "--out", str(out), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.split(": ", 1)[1])
    assert summary["genes_known"] == "5 of 40" and summary["sentence_genes_known_percent"] < 50
    assert "known to the model" in caplog.text and "check --gene-key" in caplog.text


def test_chat_takes_its_question_after_options(trained_run, capsys):
    run, data = trained_run
    question = next(r["source"] for r in load_split(data, "test") if r["task"] == "annotation")
    assert main(["chat", str(run), "--manifest", str(Path(data) / "manifest.json"), question]) == 0
    assert capsys.readouterr().out.startswith("[annotation]")


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as stop:  # argparse's own checks (types, integer ranges)
        return stop.code
