"""Answering plain-language questions: the engine behind `chatcell chat` and `chatcell web`.

Each question is analysed against the model's manifest (`prompts.analyse_question`). Classification
questions (annotation, drug response) get a constrained answer: the best label of the known label
set with a probability for each label, so the answer is never malformed. Generation questions are
gene-constrained by default, in the chosen decoding mode: exactly N distinct genes of the model's
vocabulary (N from the question, else the training top-N), so a generated cell is never malformed
either; the option `free` (CLI `--free`, web API `"free": true`) decodes them as free text instead.
A pseudo-cell question (a cell of a named type) is answered with the best of `candidates` samples
by the model's own annotation (`chatcell_jax.serve.pseudocells`); the answer carries `type_probability`
and `candidates`, and a note says so. Genes the model does not know are reported in `notes`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from chatcell_jax.serve import prompts
from chatcell_jax.serve.generation import Answer, GeneConstraint, Generator, GeneVocabulary
from chatcell_jax.serve.options import DecodingOptions, chat_decoding
from chatcell_jax.serve.pseudocells import DEFAULT_CANDIDATES, check_candidates, pseudo_cells
from chatcell_jax.singlecell import tasks
from chatcell_jax.singlecell.manifest import Manifest

log = logging.getLogger(__name__)


class ChatEngine:
    """A generator plus the manifest of the data it was trained on."""

    def __init__(self, generator: Generator, manifest: Manifest, example_sentences: list[str] | None = None):
        self.generator, self.manifest = generator, manifest
        self.labels = manifest.labels
        self.top_k = manifest.sentence_length
        self._example_sentences = example_sentences or []
        self._genes: GeneVocabulary | None = None

    def gene_vocabulary(self) -> GeneVocabulary:
        """The genes constrained answers draw from (built at the first generation question)."""
        if self._genes is None:
            self._genes = self.generator.gene_vocabulary(self.manifest)
        return self._genes

    def answer(self, questions: list[str], options: dict | None = None) -> list[dict]:
        """Answers; `options` holds `DecodingOptions` fields (mode default: ChatCell's sampling),
        `free` and `candidates`, all checked before any model work."""
        options = dict(options or {})
        check_candidates(options.get("candidates", DEFAULT_CANDIDATES))
        options["decoding"] = chat_decoding(options)
        return [self._answer_one(q, options) for q in questions]

    def _answer_one(self, question: str, options: dict) -> dict:
        analysis = prompts.analyse_question(question, self.manifest)
        notes = []
        if analysis.unknown_gene_like:
            notes.append(
                f"{len(analysis.unknown_gene_like)} gene-like word(s) unknown to the model: "
                f"{' '.join(analysis.unknown_gene_like[:10])}"
            )
        if tasks.get(analysis.task).classifies:
            labels = self.manifest.labels_of(tasks.get(analysis.task).label_set)
            if labels:
                probs = self.generator.classify([question], labels)[0]
                ranked = sorted(zip(labels, probs.tolist()), key=lambda item: -item[1])
                return {
                    "task": analysis.task,
                    "output": ranked[0][0],
                    "score": ranked[0][1],
                    "label_probs": dict(ranked),
                    "notes": notes,
                }
            notes.append("the model knows no labels for this task; answering freely")
        return self._generation_answer(question, analysis, options, notes)

    def _generation_answer(
        self, question: str, analysis: prompts.QuestionAnalysis, options: dict, notes: list[str]
    ) -> dict:
        n = prompts.top_k_in_question(question, self.top_k)
        decoding: DecodingOptions = options["decoding"]
        cfg, seed = decoding.generation_config(default_new_tokens=n + 16), decoding.seed
        constrained = analysis.task in tasks.GENERATION and not options.get("free")
        if not constrained or analysis.task == "random_generation":
            constraint = GeneConstraint(self.gene_vocabulary(), n) if constrained else None
            best = self.generator.generate([question], cfg, seed=seed, constraint=constraint)[0][0]
            return self._generated(analysis.task, best, notes, "genes" if constrained else "free")
        cell = pseudo_cells(
            self.generator,
            [(question, analysis.cell_type)],
            GeneConstraint(self.gene_vocabulary(), n),
            cfg,
            seed=seed,
            candidates=options.get("candidates", DEFAULT_CANDIDATES),
            cell_types=list(self.labels.cell_type),
        )[0]
        if cell.type_probability is not None:
            notes.append(
                f"best of {cell.candidates} candidates by the model's own annotation: "
                f"{cell.type_probability:.1%} {cell.cell_type}"
            )
        return self._generated(
            analysis.task,
            cell.answer,
            notes,
            "genes",
            type_probability=cell.type_probability,
            candidates=cell.candidates,
        )

    @staticmethod
    def _generated(task: str, answer: Answer, notes: list[str], decoding: str, **extra) -> dict:
        return {
            "task": task,
            "output": answer.text,
            "score": answer.score,
            "label_probs": None,
            "notes": notes,
            "decoding": decoding,
            **extra,
        }

    def examples(self) -> dict:
        """Example questions per task, from the manifest's labels and real cell sentences."""
        cell_types = list(self.labels.cell_type[:3])
        out = {
            "pseudo_cell_generation": [prompts.generation_prompt(self.top_k, c) for c in cell_types],
            "random_generation": [prompts.generation_prompt(self.top_k)],
        }
        sentences = self._example_sentences[:2]
        if cell_types and sentences:
            out["annotation"] = [prompts.annotation_prompt(s) for s in sentences]
        drugs = self.labels.drug
        if drugs and sentences:
            out["drug_sensitivity"] = [prompts.drug_prompt(sentences[0], drugs[0])]
        return {task: items for task, items in out.items() if items}


def example_sentences(manifest: Manifest, data_dir: Path | None, count: int = 3) -> list[str]:
    """Real cell sentences for examples: the test split's annotation inputs when the data directory
    is at hand, else the training source file named in the manifest."""
    if data_dir is not None and (data_dir / "test.jsonl").is_file():
        from chatcell_jax.singlecell.records import read_jsonl

        found = []
        for record in read_jsonl(data_dir / "test.jsonl"):
            if record.get("task") in tasks.GENERATION:
                found.append(record["target"])
            if len(found) == count:
                return found
    source = manifest.source("cells")
    if source is not None and source.recipe is not None and Path(source.path).is_file():
        chunk = next(prompts.sentences_from_h5ad(source.path, source.recipe, chunk_size=count))
        return [s for s in chunk.sentences if s][:count]
    return []
