"""Every form of model reference is accepted wherever a model is named: a model directory, a
training run, one of its Orbax steps, a Hugging Face directory (issue 15: `export-hf RUN_DIR`)."""

import json
import shutil

import jax
import numpy as np
import pytest

from chatcell_jax.cli import main
from chatcell_jax.errors import InputError
from chatcell_jax.model.directory import load_model


def _params(ref):
    return jax.tree.leaves(jax.device_get(load_model(ref)[1].params()))


def test_run_dir_and_its_last_step_load_the_final_model(trained_run):
    run, _ = trained_run
    final = _params(run / "model")
    steps = sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
    for ref in (run, run / "checkpoints" / str(steps[-1])):
        for a, b in zip(_params(ref), final, strict=True):
            np.testing.assert_array_equal(a, b)
    _, _, tokenizer = load_model(run / "checkpoints" / str(steps[-1]))
    assert tokenizer == run / "tokenizer" and (tokenizer / "tokenizer.json").is_file()


def test_a_step_named_by_a_relative_path_loads(trained_run, monkeypatch):
    run, _ = trained_run
    step = max((p for p in (run / "checkpoints").iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    monkeypatch.chdir(run)
    for a, b in zip(_params(step.relative_to(run)), _params(run / "model"), strict=True):
        np.testing.assert_array_equal(a, b)


def test_export_hf_takes_a_run_directory(trained_run, tmp_path):
    run, _ = trained_run
    assert main(["export-hf", str(run), "--out", str(tmp_path / "hf")]) == 0
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["model_type"] == "t5"
    for a, b in zip(_params(tmp_path / "hf"), _params(run), strict=True):
        np.testing.assert_array_equal(a, b)


def test_an_unfinished_run_names_its_steps(trained_run, tmp_path):
    run, _ = trained_run
    unfinished = tmp_path / "run"
    shutil.copytree(run, unfinished, ignore=shutil.ignore_patterns("model"))
    with pytest.raises(InputError, match="without a final model yet; name one of its steps"):
        load_model(unfinished)
