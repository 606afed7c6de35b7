"""Converting the published ChatCell-Instructions files into a prepared dataset directory.

The files hold `{source, target}` pairs only. We infer each record's task (see
`records.infer_tasks`), collect the gene vocabulary from the gene lists (generation answers, and the
cell sentences embedded in annotation and drug instructions), and write the same
`train/valid/test.jsonl` + `manifest.json` as `chatcell prepare`, so the tokenizer and the trainer
treat both alike. There is no expression matrix, so the manifest's inverse transform is null.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from chatcell_jax.atomic import atomic_dir
from chatcell_jax.errors import InputError
from chatcell_jax.singlecell.manifest import Labels, Manifest, Source
from chatcell_jax.singlecell.prepare import RESPONSES
from chatcell_jax.singlecell.records import SPLITS, is_gene_list, read_chatcell_json, write_jsonl_line

_STRIP = ".,;:!?()[]\"'"


def embedded_sentence(text: str, min_genes: int = 5) -> list[str]:
    """The longest run of gene-like words in an instruction (the cell sentence inside it)."""
    best: list[str] = []
    run: list[str] = []
    for word in text.split() + [""]:
        token = word.strip(_STRIP)
        if token and is_gene_list(" ".join([token] * min_genes), min_genes):
            run.append(token)
            continue
        if len(run) > len(best):
            best = run
        run = []
    return best if len(best) >= min_genes else []


def convert_chatcell_instructions(src: str | Path, out_dir: str | Path, *, overwrite: bool = False) -> Manifest:
    src, out_dir = Path(src), Path(out_dir)
    missing = [s for s in SPLITS if not (src / f"{s}.json").is_file()]
    if missing:
        raise InputError(f"{src} lacks {', '.join(f'{s}.json' for s in missing)} (ChatCell-Instructions layout)")
    splits = {name: read_chatcell_json(src / f"{name}.json") for name in SPLITS}
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        return _write(tmp, splits, src)


def _write(directory: Path, splits: dict[str, list[dict]], src: Path) -> Manifest:
    genes: Counter = Counter()
    cell_types, counts = set(), {}
    for name, records in splits.items():
        with (directory / f"{name}.jsonl").open("w", encoding="utf-8") as handle:
            for record in records:
                write_jsonl_line(handle, record)
                sentence = (
                    record["target"].split() if is_gene_list(record["target"]) else embedded_sentence(record["source"])
                )
                genes.update(set(sentence))
                if record["task"] == "annotation":
                    cell_types.add(record["target"].strip())
        counts[name] = dict(sorted(Counter(r["task"] for r in records).items()))
    counts["total"] = {name: len(records) for name, records in splits.items()}
    has_drug = any(r["task"] == "drug_sensitivity" for rs in splits.values() for r in rs)
    manifest = Manifest(
        # no expression matrix: no sentence recipe and no inverse transform
        sources=(Source(str(src.resolve()), "chatcell-instructions"),),
        # Drug names are not recoverable from free text; add them with the tokenizer if needed.
        labels=Labels(cell_type=tuple(sorted(cell_types)), response=RESPONSES if has_drug else ()),
        genes=dict(sorted(genes.items(), key=lambda item: (-item[1], item[0]))),
        dataset_genes=tuple(sorted(genes)),
        counts=counts,
        options={"converted_from": str(src)},
    )
    manifest.write(directory)
    return manifest
