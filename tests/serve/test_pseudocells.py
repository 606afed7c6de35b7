"""Self-consistent pseudo-cells on the briefly trained tiny model (conftest's `trained_run`).

The kept cell is checked against candidates and annotation probabilities computed here, with the
plain `Generator` calls, not through `pseudo_cells`; K = 1 against plain constrained sampling bit for
bit. Then chat, web, generate-cells and evaluate: each passes `candidates` through and refuses bad
values before any model work.
"""

import json
import logging

import anndata as ad
import numpy as np
import pytest

from chatcell_jax.cli import main
from chatcell_jax.errors import InputError
from chatcell_jax.serve.decoding import CHATCELL_SAMPLING, GenerationConfig
from chatcell_jax.serve.generation import GeneConstraint, Generator
from chatcell_jax.serve.prompts import annotation_prompt, generation_prompt
from chatcell_jax.serve.pseudocells import DEFAULT_CANDIDATES, check_candidates, pseudo_cells

K, SEED = 4, 5
BAD = [0, 257, -3, 2.5, "8", True, None]


@pytest.fixture(scope="module")
def model(trained_run):
    """(generator, manifest, constraint to the training top-N, cell types, three requests)."""
    from chatcell_jax.serve.loading import load_generator

    run, _ = trained_run
    generator, manifest = load_generator(run, batch_size=8)
    types = manifest.labels.cell_type
    requests = [(generation_prompt(manifest.top_k, t), t) for t in types[:3]]
    return generator, manifest, GeneConstraint(generator.gene_vocabulary(manifest), manifest.top_k), types, requests


def is_gene_list(text: str, genes, n: int) -> bool:
    words = text.split()
    return len(words) == n == len(set(words)) and set(words) <= set(genes)


def test_the_kept_cell_is_the_candidate_the_model_annotates_best(model):
    generator, manifest, constraint, types, requests = model
    cells = pseudo_cells(generator, requests, constraint, CHATCELL_SAMPLING, candidates=K, cell_types=types, seed=SEED)
    # the candidates, drawn here: request i's K samples are its prompt as rows i*K .. i*K+K-1
    rows = generator.generate(
        [p for p, _ in requests for _ in range(K)], CHATCELL_SAMPLING, seed=SEED, constraint=constraint
    )
    texts = [r[0].text for r in rows]
    probs = generator.classify([annotation_prompt(t) for t in texts], types)
    kept_probs, all_probs = [], []
    for i, (cell, (_, cell_type)) in enumerate(zip(cells, requests)):
        pool, p = texts[i * K : (i + 1) * K], probs[i * K : (i + 1) * K, types.index(cell_type)]
        assert len(set(pool)) > 1  # really different samples
        assert cell.answer.text in pool and cell.answer.text == pool[int(np.argmax(p))]
        assert cell.type_probability == pytest.approx(float(p.max()), abs=1e-6) and cell.type_probability > 0
        assert (cell.cell_type, cell.candidates) == (cell_type, K)
        assert is_gene_list(cell.answer.text, constraint.vocabulary.genes, manifest.top_k)
        assert cell.answer.token_ids[manifest.top_k + 1] == generator.config.eos_token_id
        kept_probs.append(cell.type_probability)
        all_probs += p.tolist()
    # reranking changes answers: not every kept cell is the first sample, and the kept ones are likelier
    assert any(c.answer.text != texts[i * K] for i, c in enumerate(cells))
    assert np.mean(kept_probs) > np.mean(all_probs)


def test_one_candidate_is_plain_constrained_sampling(model, monkeypatch):
    generator, _, constraint, types, requests = model
    plain = generator.generate([p for p, _ in requests], CHATCELL_SAMPLING, seed=SEED, constraint=constraint)
    monkeypatch.setattr(generator, "classify", lambda *a, **k: pytest.fail("one candidate needs no annotation"))
    single = pseudo_cells(generator, requests, constraint, CHATCELL_SAMPLING, candidates=1, cell_types=types, seed=SEED)
    assert [c.answer for c in single] == [r[0] for r in plain]  # text, score and token ids
    assert all(c.type_probability is None and c.candidates == 1 for c in single)


def test_answers_do_not_depend_on_the_batch_size(model):
    generator, _, constraint, types, requests = model
    other = Generator(generator.config, generator.params, generator.tokenizer, batch_size=3)
    a, b = (
        pseudo_cells(g, requests, constraint, CHATCELL_SAMPLING, candidates=K, cell_types=types, seed=SEED)
        for g in (generator, other)
    )
    assert [c.answer.token_ids for c in a] == [c.answer.token_ids for c in b]
    np.testing.assert_allclose([c.type_probability for c in a], [c.type_probability for c in b], atol=1e-5)


def test_beam_search_reranks_its_beams_and_greedy_has_one_answer(model):
    generator, _, constraint, types, requests = model
    beam = GenerationConfig(num_beams=3)
    cells = pseudo_cells(generator, requests, constraint, beam, candidates=DEFAULT_CANDIDATES, cell_types=types)
    beams = generator.generate(
        [p for p, _ in requests], GenerationConfig(num_beams=3, num_return_sequences=3), constraint=constraint
    )
    for cell, options, (_, cell_type) in zip(cells, beams, requests):
        texts = [a.text for a in options]
        p = generator.classify([annotation_prompt(t) for t in texts], types)[:, types.index(cell_type)]
        assert cell.candidates == 3 and cell.answer.text == texts[int(np.argmax(p))]
    greedy = pseudo_cells(generator, requests, constraint, GenerationConfig(), candidates=8, cell_types=types)
    plain = generator.generate([p for p, _ in requests], GenerationConfig(), constraint=constraint)
    assert [c.answer for c in greedy] == [r[0] for r in plain] and all(c.candidates == 1 for c in greedy)


def test_without_cell_types_there_is_one_candidate_and_unknown_types_are_errors(model, caplog):
    generator, _, constraint, types, requests = model
    with caplog.at_level(logging.INFO, logger="chatcell_jax.serve.pseudocells"):
        cells = pseudo_cells(generator, requests[:1], constraint, CHATCELL_SAMPLING, candidates=K, cell_types=[])
    assert cells[0].candidates == 1 and "no cell-type labels" in caplog.text
    with pytest.raises(InputError, match="unknown cell type.*'Neuron'"):
        pseudo_cells(generator, [("a Neuron", "Neuron")], constraint, CHATCELL_SAMPLING, cell_types=types)


@pytest.mark.parametrize("value", BAD)
def test_bad_candidate_counts_are_input_errors(value):
    with pytest.raises(InputError, match=r"from 1 to 256.*--candidates 16"):
        check_candidates(value)
    assert check_candidates(np.int64(7)) == 7


# --- chat, web, generate-cells and evaluate pass it through -------------------------------------------


@pytest.fixture(scope="module")
def engine(model):
    from chatcell_jax.serve.chat import ChatEngine

    generator, manifest, *_ = model
    return ChatEngine(generator, manifest)


def test_chat_pseudo_cells_carry_the_type_probability(engine, model):
    _, manifest, constraint, types, _ = model
    question = f"Generate the top 12 genes of a {types[0]} cell."
    result = engine.answer([question], {"candidates": 3})[0]
    assert (result["task"], result["decoding"], result["candidates"]) == ("pseudo_cell_generation", "genes", 3)
    assert 0 < result["type_probability"] <= 1 and is_gene_list(result["output"], constraint.vocabulary.genes, 12)
    assert any("best of 3 candidates" in note and types[0] in note for note in result["notes"])
    assert engine.answer([question])[0]["candidates"] == DEFAULT_CANDIDATES
    assert "candidates" not in engine.answer(["Generate 12 genes of a random cell."], {"candidates": 3})[0]
    assert "candidates" not in engine.answer([question], {"candidates": 3, "free": True})[0]
    with pytest.raises(InputError, match="from 1 to 256"):
        engine.answer([question], {"candidates": 0})


def test_web_api_takes_and_checks_candidates(engine, model):
    from fastapi.testclient import TestClient

    from chatcell_jax.serve.web.server import create_app

    *_, types, _ = model
    client = TestClient(create_app(engine))
    question = f"Generate the top 12 genes of a {types[1]} cell."
    response = client.post("/api/generate", json={"prompts": [question], "candidates": 2})
    assert response.status_code == 200 and response.json()["results"][0]["candidates"] == 2
    for value in BAD:  # a string or a bool is no count either, though pydantic would convert them
        bad = client.post("/api/generate", json={"prompts": [question], "candidates": value})
        assert bad.status_code == 422 and "from 1 to 256" in json.dumps(bad.json()), value


def test_generate_cells_stores_the_type_probability(model, tmp_path):
    from chatcell_jax.serve.jobs import generate_cells

    generator, manifest, constraint, types, _ = model
    generate_cells(
        generator,
        manifest,
        tmp_path / "c.h5ad",
        n_cells=2,
        cell_type=types[2],
        cfg=CHATCELL_SAMPLING,
        seed=SEED,
        candidates=3,
    )
    cells = ad.read_h5ad(tmp_path / "c.h5ad")
    expected = pseudo_cells(
        generator,
        [(generation_prompt(manifest.top_k, types[2]), types[2])] * 2,
        constraint,
        CHATCELL_SAMPLING,
        candidates=3,
        cell_types=types,
        seed=SEED,
    )
    assert list(cells.obs["sentence"]) == [c.answer.text for c in expected]
    np.testing.assert_allclose(cells.obs["type_probability"], [c.type_probability for c in expected], atol=1e-6)
    assert cells.uns["chatcell_generation"]["candidates"] == 3
    generate_cells(
        generator, manifest, tmp_path / "one.h5ad", n_cells=2, cell_type=types[2], cfg=CHATCELL_SAMPLING, candidates=1
    )
    assert np.isnan(ad.read_h5ad(tmp_path / "one.h5ad").obs["type_probability"]).all()  # nothing scored
    generate_cells(generator, manifest, tmp_path / "random.h5ad", n_cells=2, cell_type=None, cfg=CHATCELL_SAMPLING)
    assert "type_probability" not in ad.read_h5ad(tmp_path / "random.h5ad").obs


def test_evaluate_draws_the_pseudo_cells_with_candidates(model):
    from chatcell_jax.evaluate.predict import _add_gene_answers

    generator, manifest, constraint, types, requests = model
    records = [{"task": "pseudo_cell_generation", "source": p, "label": t} for p, t in requests]
    records.append({"task": "random_generation", "source": generation_prompt(manifest.top_k)})
    _add_gene_answers(generator, records, manifest, CHATCELL_SAMPLING, SEED, False, False, candidates=K)
    expected = pseudo_cells(
        generator, requests, constraint, CHATCELL_SAMPLING, candidates=K, cell_types=types, seed=SEED
    )
    assert [r["output_genes"] for r in records[:3]] == [c.answer.text for c in expected]
    assert [r["type_probability"] for r in records[:3]] == [c.type_probability for c in expected]
    assert all(r["candidates"] == K for r in records[:3])
    assert is_gene_list(records[3]["output_genes"], constraint.vocabulary.genes, manifest.top_k)
    assert "candidates" not in records[3] and "type_probability" not in records[3]


@pytest.mark.parametrize("command", ["chat", "evaluate", "generate-cells"])
def test_bad_candidates_fail_before_the_model_loads(trained_run, tmp_path, capsys, command):
    """`--candidates 0` on a model path that does not exist: the candidates error comes first."""
    _, data = trained_run
    extra = {
        "chat": ["hello"],
        "evaluate": ["--data", str(data), "--out", str(tmp_path / "r")],
        "generate-cells": ["--out", str(tmp_path / "c.h5ad")],
    }[command]
    assert main([command, str(tmp_path / "no-model"), *extra, "--candidates", "0"]) == 2
    err = capsys.readouterr().err
    assert "candidates must be a whole number from 1 to 256" in err and "does not exist" not in err
    assert len(err.strip().splitlines()) == 1


def test_the_candidates_flags_parse():
    from chatcell_jax.cli import build_parser

    parser = build_parser()
    for argv in (["chat", "m"], ["generate-cells", "m", "--out", "x"], ["evaluate", "m", "--data", "d", "--out", "o"]):
        assert parser.parse_args(argv).candidates == DEFAULT_CANDIDATES
        assert parser.parse_args([*argv, "--candidates", "5"]).candidates == 5
