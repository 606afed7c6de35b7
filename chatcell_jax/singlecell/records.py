"""Instruction records on disk: our JSONL files and the published ChatCell-Instructions JSON lists.

A record is a plain dict with `source` (the instruction), `target` (the answer), `task`, `cell_id`
and `label`. ChatCell's files hold only `source` and `target`; the task is inferred from the shape
of the answer (see `infer_tasks`), and `cell_id`/`label` are left empty.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from chatcell_jax.errors import InputError

log = logging.getLogger(__name__)

FIELDS = ("source", "target", "task", "cell_id", "label")
SPLITS = ("train", "valid", "test")
DRUG_ANSWERS = {"sensitive", "resistant"}
# A gene list answer: many upper-case words of gene-symbol characters.
_GENE_WORD = re.compile(r"^[A-Z0-9][A-Z0-9._\-/@]*$")


def read_jsonl(path: str | Path, required: tuple[str, ...] = ("source", "target")) -> Iterator[dict]:
    """Records of a JSONL file; each line must be an object whose `required` fields are strings."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist; run `chatcell prepare` first or check the --data directory")
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"{path}:{number} is not valid JSON ({err.msg})") from None
            if not isinstance(record, dict) or not all(isinstance(record.get(f), str) for f in required):
                raise InputError(f"{path}:{number} needs the string field(s) {', '.join(map(repr, required))}")
            yield record


def write_jsonl_line(handle, record: dict) -> None:
    handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def is_gene_list(text: str, min_words: int = 5) -> bool:
    words = text.split()
    return len(words) >= min_words and sum(bool(_GENE_WORD.match(w)) for w in words) >= 0.9 * len(words)


def read_chatcell_json(path: str | Path) -> list[dict]:
    """Records from one published ChatCell-Instructions file (a JSON list of {source, target})."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist")
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(f"{path} is not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(items, list) or not all(isinstance(i, dict) and {"source", "target"} <= i.keys() for i in items):
        raise InputError(f"{path} is not a ChatCell-Instructions file: expected a JSON list of {{source, target}}")
    return infer_tasks([{"source": str(i["source"]), "target": str(i["target"])} for i in items])


def infer_tasks(records: list[dict]) -> list[dict]:
    """Fill `task` (and `label` for classification) from the answers.

    - answer sensitive/resistant -> drug_sensitivity;
    - answer a gene list -> pseudo_cell_generation when the instruction names a cell type seen as an
      annotation answer in the same records, else random_generation;
    - any other short answer -> annotation (the answer is the cell type).
    """
    cell_types: set[str] = set()
    for record in records:
        target = record["target"].strip()
        if target.lower() in DRUG_ANSWERS:
            record.update(task="drug_sensitivity", label=target.lower())
        elif not is_gene_list(target):
            record.update(task="annotation", label=target)
            cell_types.add(target)
    # Longest names first, so "CD4+ T cell" wins over "T cell".
    names = sorted(cell_types, key=len, reverse=True)
    for record in records:
        if "task" in record:
            continue
        named = next((name for name in names if name in record["source"]), None)
        record.update(task="pseudo_cell_generation" if named else "random_generation", label=named or "")
    for record in records:
        record.setdefault("cell_id", "")
    counts = Counter(r["task"] for r in records)
    log.info("inferred tasks of %d ChatCell records: %s", len(records), dict(counts))
    return records


def load_split(data: str | Path, split: str) -> list[dict]:
    """A split of a prepared directory (`<split>.jsonl`) or of a ChatCell-Instructions directory
    (`<split>.json`)."""
    data = Path(data)
    if (data / f"{split}.jsonl").is_file():
        return list(read_jsonl(data / f"{split}.jsonl"))
    if (data / f"{split}.json").is_file():
        return read_chatcell_json(data / f"{split}.json")
    raise InputError(f"{data} has no {split}.jsonl (prepared data) or {split}.json (ChatCell-Instructions)")


def iter_all(data: str | Path, splits: Iterable[str] = SPLITS) -> Iterator[dict]:
    for split in splits:
        yield from load_split(data, split)
