"""Model quality over seeds: prepare -> tokenizer -> train -> evaluate, K seeds, one table.

    python scripts/bench_quality.py                        # the bundled PBMC cells, the demo's recipe
    python scripts/bench_quality.py --h5ad FILE --label-key COL [--prepare-arg=--allow-non-integer ...]
    python scripts/bench_quality.py --set learning_rate=0.003 --seeds 3
    python scripts/bench_quality.py --grid grid.yaml       # several settings back to back

Every seed trains a model from scratch on the same prepared split (the seed moves the parameters,
dropout and data order, not the split) with `configs/train/demo.yaml` unless `--config` says
otherwise, then `chatcell evaluate` scores it on the test split next to the baselines on the same
cells. The table shows mean +- standard deviation over the seeds (and the min-max range) for the
model's free answers (sampled, ChatCell's settings) and its constrained answers (labels scored as
whole answers; genes-only decoding for generation), with the baselines once (they do not depend
on the model seed). Each finished run is appended to `OUT/results.jsonl`, and a run already there
is not repeated, so an interrupted grid continues where it stopped (`--reevaluate` scores the finished
runs again, e.g. after a change to the evaluation, without training them again).

A grid file maps setting names to overrides:

    examples_lr3:
      set: [loss_normalization=examples, learning_rate=0.003]
    top100:
      prepare: [--top-k, "100"]
      set: [max_source_length=384, max_target_length=128]

The bundled data gets the demo's preparation (top-50 sentences, every task for every cell, a
stratified split, plus the SYNTHETIC drug-response fixture of `scripts/demo.py`); `--h5ad` data
gets `chatcell prepare FILE --label-key COL --mode all --stratify --top-k 50` plus `--prepare-arg`s.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo import SYNTHETIC_DRUG, write_synthetic_drug_fixture  # noqa: E402

from chatcell_jax.cli import main as chatcell  # noqa: E402

# (row name, path into metrics.json's "tasks"; "model" is replaced by "model_constrained" for the
# constrained column). Scale: percentages.
ROWS = [
    ("annotation accuracy", ("annotation", "{m}", "accuracy")),
    ("annotation malformed", ("annotation", "{m}", "malformed")),
    ("annotation macro F1", ("annotation", "{m}", "f1_macro")),
    ("drug accuracy", ("drug_sensitivity", "{m}", "accuracy")),
    ("drug malformed", ("drug_sensitivity", "{m}", "malformed")),
    ("pseudo-cell k-NN quality@5 (expr.)", ("pseudo_cell_generation", "knn", "expression", "{m}", "5", "quality")),
    (
        "pseudo-cell discriminability@5 (expr.)",
        ("pseudo_cell_generation", "knn", "expression", "{m}", "5", "discriminability"),
    ),
    ("pseudo-cell validity", ("pseudo_cell_generation", "{m}", "validity")),
    ("pseudo-cell uniqueness", ("pseudo_cell_generation", "{m}", "uniqueness")),
    ("pseudo-cell mean length", ("pseudo_cell_generation", "{m}", "mean_length")),
    ("random validity", ("random_generation", "{m}", "validity")),
    ("random uniqueness", ("random_generation", "{m}", "uniqueness")),
    ("random mean length", ("random_generation", "{m}", "mean_length")),
]
BASELINES = [
    ("annotation accuracy", ("annotation", "baselines", "{b}", "accuracy"), ("majority", "knn", "logistic_regression")),
    ("drug accuracy", ("drug_sensitivity", "baselines", "{b}", "accuracy"), ("majority", "knn", "logistic_regression")),
    (
        "pseudo-cell k-NN quality@5 (expr.)",
        ("pseudo_cell_generation", "knn", "expression", "{b}", "5", "quality"),
        ("real_sentences",),
    ),
    ("random uniqueness", ("random_generation", "baselines", "{b}", "uniqueness"), ("real_sentences",)),
]


def _run(argv: list[str]) -> None:
    print(f"$ chatcell {shlex.join(argv)}", flush=True)
    code = chatcell(argv)
    if code != 0:
        sys.exit(f"`chatcell {argv[0]}` failed with exit code {code}")


def prepare(out: Path, args: argparse.Namespace, extra: list[str]) -> tuple[Path, Path]:
    """(data dir, tokenizer dir), built once per distinct preparation."""
    key = hashlib.sha1(json.dumps([str(args.h5ad), args.label_key, args.prepare_arg, extra]).encode()).hexdigest()[:10]
    root = out / f"data-{key}"
    data, tokenizer = root / "data", root / "tokenizer"
    if (tokenizer / "tokenizer.json").is_file():
        return data, tokenizer
    root.mkdir(parents=True, exist_ok=True)
    common = [
        "--mode",
        "all",
        "--stratify",
        "--top-k",
        "50",
        *args.prepare_arg,
        *extra,
        "--out",
        str(data),
        "--overwrite",
        "--no-progress",
    ]
    if args.h5ad is None:
        drug = write_synthetic_drug_fixture(root / "synthetic_drug_response.h5ad")
        _run(
            [
                "prepare",
                "--demo",
                "--drug-input",
                str(drug),
                "--drug",
                SYNTHETIC_DRUG,
                "--response-key",
                "response",
                *common,
            ]
        )
    else:
        _run(["prepare", str(args.h5ad), "--label-key", args.label_key, *common])
    _run(["tokenizer", "--data", str(data), "--out", str(tokenizer), "--overwrite"])
    return data, tokenizer


def train_and_evaluate(
    out: Path, name: str, seed: int, data: Path, tokenizer: Path, args: argparse.Namespace, overrides: list[str]
) -> dict:
    run = out / "runs" / f"{name}-seed{seed}"
    sets = [
        f"data={data}",
        f"tokenizer={tokenizer}",
        f"out={run}",
        f"seed={seed}",
        "overwrite=true",
        *args.set,
        *overrides,
    ]
    started = time.perf_counter()
    _run(["train", "--config", str(args.config), "--no-progress", *[a for s in sets for a in ("--set", s)]])
    result = {
        "setting": name,
        "seed": seed,
        "overrides": [*args.set, *overrides],
        "train_s": time.perf_counter() - started,
    }
    return evaluate(out, result, data)


def evaluate(out: Path, result: dict, data: Path) -> dict:
    """`chatcell evaluate` of the result's run on the test split; the result with its metrics."""
    tag = f"{result['setting']}-seed{result['seed']}"
    report = out / "reports" / tag
    _run(
        [
            "evaluate",
            str(out / "runs" / tag),
            "--data",
            str(data),
            "--split",
            "test",
            "--out",
            str(report),
            "--overwrite",
            "--seed",
            str(result["seed"]),
            "--no-progress",
        ]
    )
    return {**result, "tasks": json.loads((report / "metrics.json").read_text())["tasks"]}


def _get(tree: dict, path: tuple[str, ...]) -> float | None:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return float(tree) if isinstance(tree, (int, float)) else None


def _cell(values: list[float | None]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f} ({min(values):.1f}-{max(values):.1f})"


def table(results: list[dict]) -> str:
    """Markdown: one block of rows per setting, free and constrained columns, then the baselines."""
    lines = ["| setting | metric | free | constrained |", "|---|---|---|---|"]
    settings = list(dict.fromkeys(r["setting"] for r in results))
    for name in settings:
        runs = [r for r in results if r["setting"] == name]
        seeds = ",".join(str(r["seed"]) for r in runs)
        train_s = np.mean([r["train_s"] for r in runs])
        lines.append(f"| **{name}** (seeds {seeds}) | training time, s | {train_s:.0f} | |")
        for label, path in ROWS:
            free = [_get(r["tasks"], tuple(p.format(m="model") for p in path)) for r in runs]
            constrained = [_get(r["tasks"], tuple(p.format(m="model_constrained") for p in path)) for r in runs]
            if any(v is not None for v in free + constrained):
                lines.append(f"| {name} | {label} | {_cell(free)} | {_cell(constrained)} |")
    lines += ["", "| baseline (same cells) | metric | value |", "|---|---|---|"]
    for label, path, names in BASELINES:
        for baseline in names:
            value = _get(results[0]["tasks"], tuple(p.format(b=baseline) for p in path))
            if value is not None:
                lines.append(f"| {baseline} | {label} | {value:.1f} |")
    return "\n".join(lines)


SUMMARY = [
    ("annotation free", ("annotation", "model", "accuracy")),
    ("annotation constrained", ("annotation", "model_constrained", "accuracy")),
    ("annotation malformed", ("annotation", "model", "malformed")),
    ("drug free", ("drug_sensitivity", "model", "accuracy")),
    (
        "pseudo-cell q@5 constrained",
        ("pseudo_cell_generation", "knn", "expression", "model_constrained", "5", "quality"),
    ),
    (
        "pseudo-cell discr.@5 constrained",
        ("pseudo_cell_generation", "knn", "expression", "model_constrained", "5", "discriminability"),
    ),
]


def summary_table(results: list[dict]) -> str:
    """Markdown: one row per setting, the headline numbers (mean +- sd over seeds)."""
    lines = [
        "| setting | seeds | train s | " + " | ".join(name for name, _ in SUMMARY) + " |",
        "|---|---|---|" + "---|" * len(SUMMARY),
    ]
    for name in dict.fromkeys(r["setting"] for r in results):
        runs = [r for r in results if r["setting"] == name]
        cells = [_cell([_get(r["tasks"], path) for r in runs]).split(" (")[0] for _, path in SUMMARY]
        lines.append(
            f"| {name} | {len(runs)} | {np.mean([r['train_s'] for r in runs]):.0f} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def load_settings(args: argparse.Namespace) -> dict[str, dict]:
    if args.grid is None:
        return {args.name: {"set": [], "prepare": []}}
    grid = yaml.safe_load(args.grid.read_text()) or {}
    if not isinstance(grid, dict) or not grid:
        sys.exit(f"{args.grid}: a grid file maps setting names to {{set: [...], prepare: [...]}}")
    return {
        str(name): {
            "set": [str(s) for s in (spec or {}).get("set", [])],
            "prepare": [str(s) for s in (spec or {}).get("prepare", [])],
        }
        for name, spec in grid.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--h5ad", type=Path, help="cells with raw counts (default: the bundled PBMC cells)")
    parser.add_argument("--label-key", default="cell_type", help="obs column with the cell type (with --h5ad)")
    parser.add_argument(
        "--prepare-arg",
        action="append",
        default=[],
        help="extra `chatcell prepare` argument, e.g. --prepare-arg=--allow-non-integer (repeatable)",
    )
    parser.add_argument("--config", type=Path, default=Path("configs/train/demo.yaml"))
    parser.add_argument("--set", action="append", default=[], help="train config override for every run (repeatable)")
    parser.add_argument("--grid", type=Path, help="YAML of settings to compare (see above)")
    parser.add_argument("--name", default="demo recipe", help="the setting's name without --grid")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..K-1 per setting")
    parser.add_argument("--out", type=Path, default=Path("bench_quality_out"))
    parser.add_argument(
        "--reevaluate",
        action="store_true",
        help="evaluate finished runs again instead of skipping them (after a change to evaluation)",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results_file = args.out / "results.jsonl"
    done = [json.loads(line) for line in results_file.read_text().splitlines()] if results_file.is_file() else []
    for name, spec in load_settings(args).items():
        data, tokenizer = prepare(args.out, args, spec["prepare"])
        for seed in range(args.seeds):
            finished = next((r for r in done if r["setting"] == name and r["seed"] == seed), None)
            if finished is not None and args.reevaluate:
                done[done.index(finished)] = evaluate(args.out, finished, data)
                results_file.write_text("".join(json.dumps(r) + "\n" for r in done))
            if finished is not None:
                continue
            result = train_and_evaluate(args.out, name, seed, data, tokenizer, args, spec["set"])
            with results_file.open("a") as handle:
                handle.write(json.dumps(result) + "\n")
            done.append(result)
    wanted = set(load_settings(args))
    chosen = [r for r in done if r["setting"] in wanted and r["seed"] < args.seeds]
    text = summary_table(chosen) + "\n\n" + table(chosen)
    (args.out / "table.md").write_text(text + "\n")
    print("\n" + text)


if __name__ == "__main__":
    main()
