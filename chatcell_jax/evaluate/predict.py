"""Running a model over a split's records: the model-dependent half of `chatcell evaluate`.

Answers are produced the way ChatCell produced the ones it scored: sampled with its published
settings (top-k 50, top-p 0.95, no repeated bigrams), one answer per record, through the batch job
`chatcell_jax.serve.jobs.generate_jsonl` (the same code as `chatcell generate`). Constrained answers
are produced as well (unless `constrained` is False) and the report shows both kinds:

- classification tasks: the model scores every label as a whole answer (`Generator.classify`),
  giving `label_probs` and a constrained answer that is never malformed;
- generation tasks: a gene-constrained answer, `output_genes`, sampled with the same settings but
  exactly N (the data's top-N) distinct genes of the model's vocabulary (`GeneConstraint`). A
  pseudo-cell record's is the best of `candidates` such samples by the model's own annotation
  (`chatcell_jax.serve.pseudocells`), stored with `candidates` and `type_probability` (the model's
  probability of the requested type for it; absent when there was one candidate). A tokenizer
  without single-token genes (the published ChatCell's) gets none, with a warning.

The generation stack is imported lazily: evaluation of existing predictions never needs JAX.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from chatcell_jax.errors import InputError
from chatcell_jax.serve import decoding, jobs, loading
from chatcell_jax.serve.pseudocells import DEFAULT_CANDIDATES, check_candidates
from chatcell_jax.singlecell import tasks
from chatcell_jax.singlecell.manifest import Manifest

log = logging.getLogger(__name__)


def predict_records(
    model_ref: str | Path,
    records: Sequence[dict],
    manifest: Manifest,
    *,
    batch_size: int = 16,
    max_source_length: int = 512,
    max_new_tokens: int | None = None,
    seed: int = 0,
    constrained: bool = True,
    truncate: bool = False,
    progress: bool = False,
    candidates: int = DEFAULT_CANDIDATES,
) -> list[dict]:
    """Each record plus `output` (sampled answer) and, with `constrained`, `label_probs` for the
    classification records and `output_genes` for the generation records (for pseudo-cells the
    best of `candidates` samples by the model's own annotation)."""
    check_candidates(candidates)
    generator, _ = loading.load_generator(model_ref, batch_size=batch_size, max_source_length=max_source_length)
    top_k = manifest.sentence_length
    # Two tokens per gene covers ChatCell's own tokenizer ("▁" + gene); ours needs one.
    cfg = replace(decoding.CHATCELL_SAMPLING, max_new_tokens=max_new_tokens or 2 * top_k + 16)
    with tempfile.TemporaryDirectory(prefix="chatcell-evaluate-") as tmp:
        source, answers = Path(tmp) / "records.jsonl", Path(tmp) / "answers.jsonl"
        source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        jobs.generate_jsonl(generator, source, answers, cfg, seed=seed, truncate=truncate, progress=progress)
        predictions = [json.loads(line) for line in answers.read_text(encoding="utf-8").splitlines() if line.strip()]
    if constrained:
        _add_label_probs(generator, predictions, manifest, truncate, progress)
        _add_gene_answers(generator, predictions, manifest, cfg, seed, truncate, progress, candidates=candidates)
    return predictions


def _add_gene_answers(
    generator,
    predictions: list[dict],
    manifest: Manifest,
    cfg,
    seed: int,
    truncate: bool,
    progress: bool,
    candidates: int = DEFAULT_CANDIDATES,
) -> None:
    """`output_genes` for the generation records; pseudo-cell records also get `candidates` and
    (when more than one was drawn) `type_probability`."""
    from chatcell_jax.serve.generation import GeneConstraint
    from chatcell_jax.serve.pseudocells import pseudo_cells

    random_rows = [p for p in predictions if p.get("task") == "random_generation"]
    pseudo_rows = [p for p in predictions if p.get("task") == "pseudo_cell_generation"]
    if not random_rows and not pseudo_rows:
        return
    try:
        constraint = GeneConstraint(generator.gene_vocabulary(manifest), manifest.sentence_length)
    except InputError as err:  # e.g. an add_tokens tokenizer: the free answers are still scored
        log.warning("no gene-constrained generation answers, only the free ones are scored: %s", err)
        return
    answers = generator.generate(
        [p["source"] for p in random_rows], cfg, seed=seed, truncate=truncate, progress=progress, constraint=constraint
    )
    for record, options in zip(random_rows, answers):
        record["output_genes"] = options[0].text
    cells = pseudo_cells(
        generator,
        [(p["source"], p["label"]) for p in pseudo_rows],
        constraint,
        cfg,
        seed=seed,
        candidates=candidates,
        cell_types=list(manifest.labels.cell_type),
        truncate=truncate,
        progress=progress,
    )
    for record, cell in zip(pseudo_rows, cells):
        record.update(output_genes=cell.answer.text, candidates=cell.candidates)
        if cell.type_probability is not None:
            record["type_probability"] = cell.type_probability


def _add_label_probs(generator, predictions: list[dict], manifest: Manifest, truncate: bool, progress: bool) -> None:
    for task, key in tasks.label_sets().items():
        rows = [p for p in predictions if p.get("task") == task]
        labels = manifest.labels_of(key)
        if not rows or not labels:
            continue
        probs = generator.classify([p["source"] for p in rows], labels, truncate=truncate, progress=progress)
        for record, row in zip(rows, probs):
            record["label_probs"] = {label: float(p) for label, p in zip(labels, row)}
