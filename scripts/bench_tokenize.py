"""Benchmark: tokens per 100-gene sentence and sentences/s, our adapted tokenizer vs ChatCell's way.

ChatCell's way: the same base tokenizer with every gene added by `tokenizer.add_tokens(genes)`.
Ours: genes as score-0 Unigram pieces (`chatcell tokenizer`). Same sentences (the bundled PBMC
cells' top-100 sentences), same process, same run.

Run: .venv/bin/python scripts/bench_tokenize.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from transformers import AutoTokenizer


def rate(tokenizer, sentences: list[str], repeat: int) -> float:
    tokenizer(sentences[:10])
    start = time.perf_counter()
    for _ in range(repeat):
        tokenizer(sentences)
    return repeat * len(sentences) / (time.perf_counter() - start)


def main() -> None:
    from chatcell_jax.singlecell import prepare as ins
    from chatcell_jax.singlecell.records import iter_all
    from chatcell_jax.tokenizer import _training_text, _wrap, build_tokenizer, train_base, words_from_manifest

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = ins.prepare_dataset(
            tmp / "data", cells_input=ins.demo_data_path(), options=ins.PrepareOptions(mode="all")
        )
        build_tokenizer(tmp / "data", tmp / "ours")
        ours = AutoTokenizer.from_pretrained(str(tmp / "ours"))
        words = words_from_manifest(manifest)
        base = train_base(_training_text(tmp / "data", words), 8000, "".join(set("".join(words.all()))))
        theirs = _wrap(json.loads(base.to_str()))
        theirs.add_tokens(words.all())  # ChatCell's recipe
        sentences = [r["target"] for r in iter_all(tmp / "data") if r["task"] == "random_generation"]
        rows = []
        for name, tok in (("chatcell-jax (genes as Unigram pieces)", ours), ("ChatCell-style (add_tokens)", theirs)):
            lengths = [len(ids) for ids in tok(sentences)["input_ids"]]
            exact = np.mean([tok.decode(tok(s)["input_ids"], skip_special_tokens=True) == s for s in sentences[:200]])
            rows.append((name, np.mean(lengths), rate(tok, sentences, args.repeat), exact))
    print(f"{len(sentences)} sentences of 100 genes (bundled PBMC cells), {args.repeat} passes\n")
    print("| tokenizer | tokens per sentence (incl. EOS) | sentences/s | exact round trip |\n|---|---|---|---|")
    for name, length, speed, exact in rows:
        print(f"| {name} | {length:.1f} | {speed:,.0f} | {exact:.0%} |")
    print(
        f"\ntokens: {rows[1][1] / rows[0][1]:.2f}x fewer with ours; speed ratio (ours / ChatCell-style): "
        f"{rows[0][2] / rows[1][2]:.2f}x"
    )


if __name__ == "__main__":
    main()
