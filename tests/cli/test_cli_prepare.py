"""`chatcell prepare` through the real command line entry point."""

import json

from chatcell_jax.cli import main
from tests.helpers.h5ad import random_counts, write_h5ad


def test_demo_command(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["prepare", "--demo", "--out", str(out), "--no-progress", "--top-k", "50", "--seed", "3"]) == 0
    assert "train" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["options"]["top_k"] == 50 and manifest["options"]["seed"] == 3


def test_errors_are_one_line_with_exit_2(tmp_path, capsys):
    path = write_h5ad(tmp_path / "a.h5ad", random_counts(5, 5), obs={"louvain": list("abcab")})
    assert main(["prepare", str(path), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "chatcell prepare: error: no obs column 'cell_type'" in err and "Traceback" not in err
    assert main(["prepare", str(path), "--out", str(tmp_path / "o"), "--no-progress", "--label-key", "louvain"]) == 0


def test_drug_command(tmp_path):
    path = write_h5ad(tmp_path / "d.h5ad", random_counts(20, 30) + 0.5, obs={"cluster": ["Holiday", "Resistant"] * 10})
    args = [
        "prepare",
        str(path),
        "--out",
        str(tmp_path / "o"),
        "--no-progress",
        "--drug",
        "Cisplatin",
        "--response-key",
        "cluster",
        "--response-map",
        "Holiday=sensitive",
    ]
    assert main(args) == 0
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert sum(manifest["counts"]["total"].values()) == 20


def test_chatcell_json_command_summarises_without_an_inverse_fit(tmp_path, capsys):
    """The published ChatCell-Instructions layout has no expression matrix, so no inverse transform."""
    genes = " ".join(f"GENE{i}" for i in range(12))
    items = [
        {"source": f"Which cell type is this? {genes}", "target": "B cell"},
        {"source": "Generate the top 12 genes of a cell.", "target": genes},
    ]
    src = tmp_path / "chatcell"
    src.mkdir()
    for split in ("train", "valid", "test"):
        (src / f"{split}.json").write_text(json.dumps(items))
    assert main(["prepare", "--chatcell-json", str(src), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "inverse transform: none (no expression matrix)" in out and "cell types: 1" in out
