"""Per-task generation metrics on a fixed sample of the validation split, during training.

The validation loss says how well the model predicts the reference answers token by token; it
does not say whether greedy decoding already gives the right cell type, or valid gene lists. So
at every evaluation a fixed, seeded sample of `eval_generate` prompts per task is decoded
greedily with the current parameters (the same jitted search as `chatcell generate`) and scored:

- annotation, drug_sensitivity: `valid_<task>_accuracy`, % exact answers (stripped, lower-cased,
  ChatCell's rule);
- random_generation, pseudo_cell_generation: `valid_<task>_validity`, % generated words that are
  genes of the dataset, and `valid_<task>_uniqueness`, % distinct words per sentence. Needs the
  data's manifest.json (our prepared data); for ChatCell-Instructions data only accuracies.

Greedy, not sampling: the numbers must move only because the parameters moved.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from chatcell_jax.evaluate.metrics import normalise_answer, sentence_metrics
from chatcell_jax.serve.decoding import GenerationConfig
from chatcell_jax.singlecell.tasks import GENERATION

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    task: str
    prompts: list[str]
    targets: list[str]


def sample_tasks(records: Sequence[dict], per_task: int, seed: int) -> list[Sample]:
    """Up to `per_task` records of each task (seeded choice, fixed for the whole run)."""
    by_task: dict[str, list[dict]] = {}
    for record in records:
        by_task.setdefault(record.get("task") or "unknown", []).append(record)
    rng = np.random.default_rng(seed)
    samples = []
    for task in sorted(by_task):
        rows = by_task[task]
        chosen = sorted(rng.choice(len(rows), size=min(per_task, len(rows)), replace=False).tolist())
        samples.append(Sample(task, [rows[i]["source"] for i in chosen], [rows[i]["target"] for i in chosen]))
    return samples


def score(
    task: str, outputs: Sequence[str], targets: Sequence[str], genes: Sequence[str] | None, top_k: int | None
) -> dict[str, float]:
    """The metrics of one task's decoded outputs (named without the `valid_<task>_` prefix)."""
    if task in GENERATION:
        if not genes or not top_k:
            return {}
        found = sentence_metrics(outputs, genes, top_k)
        return {"validity": found["validity"], "uniqueness": found["uniqueness"]}
    hits = sum(normalise_answer(o) == normalise_answer(t) for o, t in zip(outputs, targets))
    return {"accuracy": 100.0 * hits / max(len(outputs), 1)}


def generation_metrics(generator, samples: Sequence[Sample], max_new_tokens: int, manifest) -> dict[str, float]:
    """`valid_<task>_<metric>` for every sampled task, decoding greedily with `generator`."""
    cfg = GenerationConfig(
        max_new_tokens=max_new_tokens,
        eos_id=generator.config.eos_token_id,
        start_id=generator.config.decoder_start_token_id,
    )
    genes = list(manifest.dataset_genes) if manifest is not None else None
    top_k = manifest.top_k if manifest is not None else None
    prompts = [p for s in samples for p in s.prompts]
    answers = generator.generate(prompts, cfg, truncate=True)
    out: dict[str, float] = {}
    start = 0
    for sample in samples:
        texts = [a[0].text for a in answers[start : start + len(sample.prompts)]]
        start += len(sample.prompts)
        for name, value in score(sample.task, texts, sample.targets, genes, top_k).items():
            out[f"valid_{sample.task}_{name}"] = float(value)
    return out
