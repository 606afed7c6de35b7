"""Gene-constrained decoding: exactly N distinct genes of the vocabulary, by construction.

On toy step functions the constrained searches are checked against brute force; on an untrained
random T5 with the real tokenizer of the bundled cells (which, decoding freely, repeats genes and
writes non-genes: checked, so the constrained checks can fail) every search gives valid, distinct,
exactly-N gene lists, sharded or not.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from chatcell_jax.errors import InputError
from chatcell_jax.serve.decoding import (
    CHATCELL_SAMPLING,
    GenerationConfig,
    exactly_distinct,
    generate,
    row_keys,
    sample_or_greedy,
)
from chatcell_jax.serve.generation import GeneConstraint, Generator, single_token_genes
from chatcell_jax.singlecell import manifest as manifest_lib
from tests.helpers.model import config as model_config
from tests.helpers.train import prepare

V, EOS = 40, 1


def toy_step(seed: int = 0):
    """Markov logits with a strong pull towards a few tokens, so free decoding repeats itself."""
    rng = np.random.default_rng(seed)
    table = rng.normal(0, 2.0, (V, V)).astype(np.float32)
    table[:, 7] += 4.0  # token 7 is the favourite after anything
    step = lambda tokens, cache, i: (jnp.asarray(table)[tokens], cache)
    return step, table


ALLOWED = np.zeros(V, bool)
ALLOWED[[3, 4, 5, 7, 9, 11, 13, 17, 19, 23, 29, 31]] = True


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max()
    return x - np.log(np.exp(x).sum())


def test_constrained_greedy_is_the_masked_argmax_chain():
    step, table = toy_step()
    n = 6
    out = jax.jit(lambda a: sample_or_greedy(step, None, 1, exactly_distinct(GenerationConfig(), n), allowed=a))(
        jnp.asarray(ALLOWED)
    )
    token, used, expected, score = 0, set(), [0], 0.0
    for t in range(n + 1):
        ok = ALLOWED.copy() if t < n else np.arange(V) == EOS
        ok[list(used)] = False
        masked = np.where(ok, table[token], -np.inf)
        token = int(np.argmax(masked))
        score += log_softmax(masked)[token]
        used.add(token)
        expected.append(token)
    assert np.asarray(out.sequences[0, 0]).tolist() == expected
    np.testing.assert_allclose(float(out.scores[0, 0]), score, rtol=1e-5)
    free = sample_or_greedy(step, None, 1, GenerationConfig(max_new_tokens=n + 1))
    assert len(set(np.asarray(free.sequences[0, 0, 1:]).tolist())) < n  # unconstrained, it repeats


@pytest.mark.parametrize(
    "settings",
    [dict(), dict(num_beams=4, num_return_sequences=4), dict(do_sample=True, top_k=5), dict(do_sample=True, top_p=0.9)],
)
@pytest.mark.parametrize("n", [1, 5, 12])
def test_toy_searches_emit_exactly_n_distinct_allowed_tokens(settings, n):
    step, _ = toy_step(1)
    cfg = exactly_distinct(GenerationConfig(max_new_tokens=3, min_new_tokens=2, no_repeat_ngram_size=2, **settings), n)
    assert (cfg.max_new_tokens, cfg.min_new_tokens, cfg.no_repeat_ngram_size) == (n + 1, 0, 0)
    beams = cfg.num_beams if not cfg.do_sample else 1
    out = jax.jit(lambda a: generate(step, jnp.zeros(16 * beams), 16, cfg, row_keys(0, jnp.arange(16)), allowed=a))(
        jnp.asarray(ALLOWED)
    )
    seqs = np.asarray(out.sequences)
    assert seqs.shape[1:] == (cfg.num_return_sequences if beams > 1 else 1, n + 2)
    for row in seqs.reshape(-1, n + 2):
        genes = row[1:-1]
        assert ALLOWED[genes].all() and len(set(genes.tolist())) == n and row[-1] == EOS
    assert np.isfinite(np.asarray(out.scores)).all()
    if beams > 1:  # the returned hypotheses of an input are distinct and best first
        assert all(len({tuple(r) for r in seqs[b]}) == cfg.num_return_sequences for b in range(16))
        assert (np.diff(np.asarray(out.scores), axis=1) <= 0).all()


@pytest.mark.parametrize("vocab", [4096, 999])
def test_constrained_beam_candidates_match_the_plain_route(vocab):
    """With the dense ban mask the chunked candidate search (4096) and the plain one (999) rank
    exactly what log_softmax + mask + running scores ranks, ties included."""
    from chatcell_jax.serve.cpu_kernels import top_k_barrier
    from chatcell_jax.serve.decoding import _beam_candidates

    B, K, k, n = 3, 4, 8, 5
    rng = np.random.default_rng(vocab)
    logits = jnp.asarray(np.round(rng.normal(size=(B * K, vocab)) * 4) / 4, jnp.float32)
    running = jnp.asarray(np.round(rng.normal(size=(B, K))), jnp.float32)
    used = rng.random((B * K, vocab)) < 0.7
    cfg = exactly_distinct(GenerationConfig(num_beams=K), n)
    sequences = jnp.zeros((B * K, n + 2), jnp.int32)
    for cur_len, ban_eos in ((3, True), (n + 1, False)):
        eos = np.arange(vocab) == EOS
        banned = (used | eos) if ban_eos else ~eos
        plain = jnp.where(banned, -jnp.inf, jax.nn.log_softmax(logits, axis=-1)) + running.reshape(-1, 1)
        want = top_k_barrier(plain.reshape(B, -1), k)
        got = jax.jit(_beam_candidates, static_argnums=(4, 5))(
            logits, sequences, jnp.int32(cur_len), running, cfg, k, jnp.asarray(used)
        )
        finite = np.isfinite(np.asarray(want[0]))
        np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(want[0]))
        np.testing.assert_array_equal(np.asarray(got[1])[finite], np.asarray(want[1])[finite])


def test_a_constrained_search_needs_its_mask_and_config():
    step, _ = toy_step()
    with pytest.raises(ValueError, match="allowed"):
        sample_or_greedy(step, None, 1, exactly_distinct(GenerationConfig(), 3))
    with pytest.raises(ValueError, match="constrained config"):
        sample_or_greedy(step, None, 1, GenerationConfig(), allowed=jnp.asarray(ALLOWED))
    with pytest.raises(ValueError, match="exactly_distinct"):
        GenerationConfig(distinct_tokens=3)  # max_new_tokens must be N + 1


# --- an untrained T5 with the real tokenizer of the bundled cells ---------------------------------


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(generator, manifest, gene vocabulary) for a random tiny T5 over the demo tokenizer."""
    from transformers import AutoTokenizer

    from chatcell_jax.model.t5 import T5

    data, tok_dir = prepare(tmp_path_factory.mktemp("constrained"))
    manifest = manifest_lib.load(data)
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    cfg = model_config("v1.0", vocab_size=len(tokenizer))
    generator = Generator(cfg, T5(cfg, rngs=nnx.Rngs(0)).params(), tokenizer, batch_size=4)
    return generator, manifest, generator.gene_vocabulary(manifest)


PROMPTS = [
    "Generate the top 30 genes of a CD14+ Monocyte cell.",
    "Generate 30 genes of a random cell.",
    "CD74 HLA-DRA LYZ",
    "Which genes would a CD19+ B cell express first?",
    "x",
]
SEARCHES = {
    "greedy": GenerationConfig(),
    "beam": GenerationConfig(num_beams=4),
    "beam-3-returned": GenerationConfig(num_beams=4, num_return_sequences=3),
    "sample": CHATCELL_SAMPLING,
}


def check_genes(answers, vocabulary, manifest, n: int, eos: int = 1) -> None:
    known = set(manifest.dataset_genes)
    for options in answers:
        for answer in options:
            genes = answer.text.split()
            assert len(genes) == n and len(set(genes)) == n and set(genes) <= set(vocabulary.genes) <= known
            assert answer.token_ids[n + 1] == eos and eos not in answer.token_ids[1 : n + 1]
            assert np.isfinite(answer.score)


def test_the_vocabulary_is_the_tokenizers_single_token_genes(setup):
    generator, manifest, vocabulary = setup
    assert len(vocabulary) == len(manifest.genes) < len(manifest.dataset_genes)  # genes of the sentences
    ids = generator.tokenizer(list(vocabulary.genes), add_special_tokens=False)["input_ids"]
    assert [i[0] for i in ids] == list(vocabulary.token_ids) and all(len(i) == 1 for i in ids)
    assert max(vocabulary.token_ids) < generator.config.vocab_size
    mask = vocabulary.mask(generator.config.padded_vocab_size)
    assert mask.sum() == len(vocabulary) and not mask[[0, 1, 2]].any()


def test_free_decoding_of_the_untrained_model_repeats_and_invents(setup):
    """What the constraint is for: freely, this model's gene lists are not gene lists."""
    generator, manifest, _ = setup
    known = set(manifest.dataset_genes)
    for cfg in (GenerationConfig(max_new_tokens=31), dataclasses.replace(CHATCELL_SAMPLING, max_new_tokens=31)):
        words = [a[0].text.split() for a in generator.generate(PROMPTS, cfg)]
        assert any(len(set(w)) < len(w) or not set(w) <= known or len(w) != 30 for w in words)


@pytest.mark.parametrize("search", list(SEARCHES))
@pytest.mark.parametrize("n", [7, 30])
def test_every_search_gives_exactly_n_distinct_valid_genes(setup, search, n):
    generator, manifest, vocabulary = setup
    cfg = SEARCHES[search]
    answers = generator.generate(PROMPTS, cfg, constraint=GeneConstraint(vocabulary, n), seed=3)
    assert [len(a) for a in answers] == [cfg.num_return_sequences] * len(PROMPTS)
    check_genes(answers, vocabulary, manifest, n)
    if search == "sample":  # rows draw their own genes; the seed moves them
        assert len({a[0].text for a in answers}) > 1
        other = generator.generate(PROMPTS, cfg, constraint=GeneConstraint(vocabulary, n), seed=4)
        assert [a[0].text for a in other] != [a[0].text for a in answers]


def test_all_vocabulary_genes_can_be_asked_for(setup):
    generator, manifest, vocabulary = setup
    everything = GeneConstraint(vocabulary, len(vocabulary))
    answers = generator.generate(PROMPTS[:1], GenerationConfig(), constraint=everything)
    assert sorted(answers[0][0].text.split()) == sorted(vocabulary.genes)


@pytest.mark.parametrize("search", ["greedy", "beam-3-returned", "sample"])
def test_eight_devices_answer_as_one(setup, search):
    from chatcell_jax.model.sharding import make_mesh, shard_params

    generator, manifest, vocabulary = setup
    mesh = make_mesh((8, 1, 1), jax.devices()[:8])
    sharded = Generator(
        generator.config,
        shard_params(generator.params, generator.config, mesh),
        generator.tokenizer,
        batch_size=8,
        mesh=mesh,
    )
    single = Generator(generator.config, generator.params, generator.tokenizer, batch_size=8)
    constraint = GeneConstraint(vocabulary, 12)
    a = single.generate(PROMPTS * 2, SEARCHES[search], constraint=constraint)
    b = sharded.generate(PROMPTS * 2, SEARCHES[search], constraint=constraint)
    assert [[x.token_ids for x in row] for row in a] == [[x.token_ids for x in row] for row in b]
    np.testing.assert_allclose([x.score for row in a for x in row], [x.score for row in b for x in row], atol=1e-4)
    check_genes(b, vocabulary, manifest, 12)


def test_more_genes_than_the_vocabulary_is_an_input_error(setup):
    _, _, vocabulary = setup
    with pytest.raises(InputError, match=rf"only {len(vocabulary)} genes as single tokens.*--free"):
        GeneConstraint(vocabulary, len(vocabulary) + 1)
    with pytest.raises(InputError, match="at least 1"):
        GeneConstraint(vocabulary, 0)


def test_a_tokenizer_without_single_token_genes_is_an_input_error(setup):
    """ChatCell's published tokenizer added genes with add_tokens: a gene is then no "▁GENE" piece
    (a sentence spends two tokens per gene), so a one-token-per-gene search cannot spell it."""
    import copy

    generator, manifest, _ = setup
    tokenizer = copy.deepcopy(generator.tokenizer)
    added = ["XGENE1", "XGENE2", "XGENE3"]
    tokenizer.add_tokens(added)
    with pytest.raises(InputError, match="one token per gene.*--free"):
        single_token_genes(tokenizer, added, len(tokenizer))
    with pytest.raises(InputError, match="one token per gene"):
        single_token_genes(generator.tokenizer, ["NOT-A-GENE-1", "NOT_A_GENE_2"], generator.config.vocab_size)
    with pytest.raises(InputError, match="lists none"):
        generator.gene_vocabulary(dataclasses.replace(manifest, genes={}, dataset_genes=()))
    # ids beyond the model's rows are no genes it can emit
    with pytest.raises(InputError, match="one token per gene"):
        single_token_genes(generator.tokenizer, manifest.genes, 3)


# --- chat, web and generate-cells use it by default --------------------------------------------------


@pytest.fixture(scope="module")
def engine(setup):
    from chatcell_jax.serve.chat import ChatEngine

    generator, manifest, _ = setup
    return ChatEngine(generator, manifest)


def is_gene_list(text: str, genes, n: int) -> bool:
    words = text.split()
    return len(words) == n == len(set(words)) and set(words) <= set(genes)


def test_chat_generation_questions_get_exactly_n_distinct_genes(engine, setup):
    _, manifest, vocabulary = setup
    cell_type = manifest.labels.cell_type[0]
    for options in ({}, {"mode": "greedy"}, {"mode": "beam", "num_beams": 2}):
        result = engine.answer([f"Generate the top 20 genes of a {cell_type} cell."], options)[0]
        assert (result["task"], result["decoding"]) == ("pseudo_cell_generation", "genes")
        assert is_gene_list(result["output"], vocabulary.genes, 20), result["output"]
    random_cell = engine.answer(["Generate 12 genes of a random cell."])[0]
    assert random_cell["task"] == "random_generation" and is_gene_list(random_cell["output"], vocabulary.genes, 12)
    default_n = engine.answer(["Give me a random cell."])[0]  # no N in the question: the training top-N
    assert is_gene_list(default_n["output"], vocabulary.genes, manifest.top_k)
    free = engine.answer([f"Generate the top 20 genes of a {cell_type} cell."], {"free": True})[0]
    assert free["decoding"] == "free" and not is_gene_list(free["output"], manifest.dataset_genes, 20)


def test_chat_asking_for_more_genes_than_known_is_an_input_error(engine, setup):
    _, _, vocabulary = setup
    with pytest.raises(InputError, match="--free"):
        engine.answer([f"Generate the top {len(vocabulary) + 1} genes of a random cell."])


def test_web_api_is_constrained_by_default_and_free_on_request(engine, setup):
    from fastapi.testclient import TestClient

    from chatcell_jax.serve.web.server import create_app

    _, manifest, vocabulary = setup
    client = TestClient(create_app(engine))
    question = f"Generate the top 20 genes of a {manifest.labels.cell_type[1]} cell."
    default = client.post("/api/generate", json={"prompts": [question], "mode": "greedy"})
    assert default.status_code == 200
    result = default.json()["results"][0]
    assert result["decoding"] == "genes" and is_gene_list(result["output"], vocabulary.genes, 20)
    free = client.post("/api/generate", json={"prompts": [question], "mode": "greedy", "free": True}).json()
    assert free["results"][0]["decoding"] == "free" and free["results"][0]["output"] != result["output"]
    assert client.post("/api/generate", json={"prompts": [question], "free": "maybe"}).status_code == 422
    too_many = client.post("/api/generate", json={"prompts": ["Generate the top 999 genes of a random cell."]})
    assert too_many.status_code == 422 and "--free" in too_many.json()["detail"]


def test_generate_cells_is_constrained_by_default(setup, tmp_path):
    import anndata as ad

    from chatcell_jax.serve.jobs import generate_cells

    generator, manifest, vocabulary = setup
    n = manifest.top_k
    summary = generate_cells(
        generator, manifest, tmp_path / "genes.h5ad", n_cells=3, cell_type="CD14+ Monocyte", cfg=CHATCELL_SAMPLING
    )
    cells = ad.read_h5ad(tmp_path / "genes.h5ad")
    assert summary["unknown_words"] == 0 and cells.uns["chatcell_generation"]["decoding"] == "genes"
    assert all(is_gene_list(s, vocabulary.genes, n) for s in cells.obs["sentence"])
    assert ((np.asarray(cells.X) > 0).sum(axis=1) == n).all()  # N distinct genes: N expressed genes
    free = generate_cells(
        generator,
        manifest,
        tmp_path / "free.h5ad",
        n_cells=3,
        cell_type="CD14+ Monocyte",
        cfg=dataclasses.replace(CHATCELL_SAMPLING, max_new_tokens=n + 16),
        free=True,
    )
    sentences = ad.read_h5ad(tmp_path / "free.h5ad").obs["sentence"]
    assert free["unknown_words"] > 0 or not all(is_gene_list(s, vocabulary.genes, n) for s in sentences)


def test_the_free_flags_parse():
    from chatcell_jax.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["chat", "m", "--free"]).free and not parser.parse_args(["chat", "m"]).free
    args = parser.parse_args(["generate-cells", "m", "--out", "x.h5ad", "--free"])
    assert args.free and not parser.parse_args(["generate-cells", "m", "--out", "x.h5ad"]).free


def test_evaluate_skips_gene_answers_a_tokenizer_cannot_spell(setup, caplog):
    """`chatcell evaluate` on a model whose tokenizer has no single-token genes (the published
    ChatCell's) still scores its free answers: the constrained ones are left out, with a warning."""
    from chatcell_jax.evaluate.predict import _add_gene_answers

    generator, manifest, vocabulary = setup
    records = [{"task": "random_generation", "source": PROMPTS[1]}, {"task": "annotation", "source": PROMPTS[2]}]
    _add_gene_answers(
        generator,
        records,
        dataclasses.replace(manifest, dataset_genes=("NOT-A-GENE-1",), top_k=5),
        CHATCELL_SAMPLING,
        0,
        False,
        False,
    )
    assert "one token per gene" in caplog.text and not any("output_genes" in r for r in records)
    _add_gene_answers(generator, records, manifest, CHATCELL_SAMPLING, 0, False, False)
    assert is_gene_list(records[0]["output_genes"], vocabulary.genes, manifest.top_k)
    assert "output_genes" not in records[1]
