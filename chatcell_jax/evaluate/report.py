"""The report directory: metrics.json, report.md and PNG figures, written atomically.

Everything is written into a hidden temporary directory next to the target and renamed into place
at the end, so an interrupted or failed evaluation never leaves a report that looks complete.
Tables put the model next to its baselines (same cells) and ChatCell's published numbers
(other data, labelled as reference).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from chatcell_jax.atomic import atomic_dir
from chatcell_jax.evaluate import figures
from chatcell_jax.evaluate.published import PUBLISHED, SOURCE
from chatcell_jax.singlecell import tasks as task_registry

log = logging.getLogger(__name__)

CLASSIFICATION_COLUMNS = [
    ("accuracy", "accuracy"),
    ("precision_weighted", "precision (w)"),
    ("recall_weighted", "recall (w)"),
    ("f1_weighted", "F1 (w)"),
    ("f1_macro", "F1 (macro)"),
    ("malformed", "malformed"),
]
SENTENCE_COLUMNS = [
    ("mean_length", "mean length"),
    ("length_gap", "length - N"),
    ("mean_abs_length_error", "mean abs(length - N)"),
    ("validity", "validity %"),
    ("uniqueness", "uniqueness %"),
    ("empty", "empty %"),
]
TITLES = {task.name: task.title for task in task_registry.REGISTRY}
# How a system of metrics.json is named in tables and bars.
SYSTEM_NAMES = {"model_constrained": "model (constrained)"}


# --- files ------------------------------------------------------------------------------------------


def write_report(
    out_dir: str | Path, metrics: dict, figure_data: dict, run_dir: str | Path | None = None, *, overwrite: bool = False
) -> Path:
    """Write metrics.json, report.md and figures/ into `out_dir` (atomically); returns it."""
    out_dir = Path(out_dir)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        (tmp / "figures").mkdir()
        metrics["figures"] = draw_figures(tmp / "figures", metrics, figure_data, run_dir)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_json_default) + "\n", encoding="utf-8")
        (tmp / "report.md").write_text(render_markdown(metrics), encoding="utf-8")
    log.info("wrote report %s", out_dir)
    return out_dir


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def find_training_log(run_dir: str | Path | None) -> Path | None:
    """metrics.jsonl in the run directory or its parent (a model directory inside a run)."""
    if run_dir is None:
        return None
    for candidate in (Path(run_dir) / "metrics.jsonl", Path(run_dir).parent / "metrics.jsonl"):
        if candidate.is_file():
            return candidate
    return None


def draw_figures(directory: Path, metrics: dict, figure_data: dict, run_dir) -> list[str]:
    """Every figure the metrics allow; returns their paths relative to the report directory."""
    drawn = []
    tasks = metrics["tasks"]
    for task in task_registry.CLASSIFICATION:
        if task in figure_data:
            data = figure_data[task]
            drawn.append(
                figures.confusion(
                    directory / f"confusion_{task}.png",
                    data["labels"],
                    data["matrix"],
                    f"{TITLES[task]}: model answers ({metrics['split']} split)",
                )
            )
    if figure_data.get("pseudo_cell_generation"):
        drawn.append(figures.pca_cells(directory / "pca_pseudo_cells.png", figure_data["pseudo_cell_generation"]))
    groups = headline_groups(tasks)
    if groups:
        drawn.append(figures.task_bars(directory / "task_accuracy.png", groups))
    log_path = find_training_log(run_dir)
    if log_path is not None:
        series = figures.read_training_log(log_path)
        if series:
            drawn.append(figures.training_curve(directory / "training_curve.png", series))
        else:
            log.warning("%s has no step/loss values: no training curve", log_path)
    return [f"figures/{p.name}" for p in drawn]


def headline_groups(tasks: dict) -> dict[str, dict[str, float]]:
    """{task headline: {system: value}} for the bar chart."""
    groups = {}
    for task in task_registry.CLASSIFICATION:
        if task in tasks:
            bars = {"model": tasks[task]["model"]["accuracy"]}
            if "model_constrained" in tasks[task]:
                bars["model (constrained)"] = tasks[task]["model_constrained"]["accuracy"]
            bars |= {name: m["accuracy"] for name, m in tasks[task].get("baselines", {}).items()}
            groups[f"{task}\naccuracy"] = bars
    if "pseudo_cell_generation" in tasks:
        knn = tasks["pseudo_cell_generation"]["knn"]["expression"]
        groups["pseudo-cell\nk-NN quality K=5"] = {
            SYSTEM_NAMES.get(name, name): table["5"]["quality"] for name, table in knn.items()
        }
    if "random_generation" in tasks:
        rg = tasks["random_generation"]
        systems = {name: rg[name] for name in ("model", "model_constrained") if name in rg} | rg.get("baselines", {})
        groups["random generation\nvalidity"] = {
            SYSTEM_NAMES.get(name, name): m["validity"] for name, m in systems.items()
        }
    return groups


# --- markdown ---------------------------------------------------------------------------------------


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines + [""]


def _published_rows(task: str, columns: list[str]) -> list[list]:
    """Rows 'system (reference: metric)' with the value under its column, '-' elsewhere."""
    rows = []
    for metric, systems in PUBLISHED.get(task, {}).items():
        key = metric.split(" ")[0]
        for system, value in systems.items():
            rows.append([f"{system} (reference, {metric})"] + [value if c == key else None for c in columns])
    return rows


def _classification_md(task: str, section: dict) -> list[str]:
    keys = [k for k, _ in CLASSIFICATION_COLUMNS]
    rows = [["model (free text)"] + [section["model"][k] for k in keys]]
    if "model_constrained" in section:
        rows.append(["model (constrained to labels)"] + [section["model_constrained"][k] for k in keys])
    rows += [[f"baseline: {name}"] + [m[k] for k in keys] for name, m in section.get("baselines", {}).items()]
    rows += _published_rows(task, keys)
    lines = [
        f"## {TITLES[task]}",
        "",
        f"{section['model']['n']} records; all numbers in %. "
        "Baselines are fitted on the train split's cells and scored on these same cells.",
        "",
    ]
    return lines + _table(["system"] + [title for _, title in CLASSIFICATION_COLUMNS], rows)


CONSTRAINED_GENES = (
    "The constrained answers are sampled with the same settings, but may only be N distinct genes "
    "the model's tokenizer holds as single tokens: valid, unique and of length N by construction."
)


def _sentence_rows(section: dict) -> list[list]:
    """The model's sentence checks: free text, and gene-constrained when present."""
    keys = [k for k, _ in SENTENCE_COLUMNS]
    rows = [["model (free text)"] + [section["model"][k] for k in keys]]
    if "model_constrained" in section:
        rows.append(["model (constrained to N distinct genes)"] + [section["model_constrained"][k] for k in keys])
    return rows


def _random_md(section: dict) -> list[str]:
    keys = [k for k, _ in SENTENCE_COLUMNS]
    rows = _sentence_rows(section)
    rows += [[f"baseline: {name}"] + [m[k] for k in keys] for name, m in section.get("baselines", {}).items()]
    rows += _published_rows("random_generation", keys)
    text = f"{section['model']['n']} generated sentences, N = {section['n_genes_requested']} genes requested."
    if "model_constrained" in section:
        text += " " + CONSTRAINED_GENES
    lines = [f"## {TITLES['random_generation']}", "", text, ""]
    return lines + _table(["system"] + [title for _, title in SENTENCE_COLUMNS], rows)


def _knn_rows(knn: dict, metric: str) -> list[list]:
    rows = []
    for space, systems in knn.items():
        for name, table in systems.items():
            rows.append(
                [space, name]
                + [
                    f"{table[k][metric]:.2f}"
                    + (f" (K={table[k]['k_reference']})" if table[k]["k_reference"] < int(k) else "")
                    for k in table
                ]
            )
    return rows


def _pseudo_md(section: dict) -> list[str]:
    knn = section["knn"]
    ks = list(next(iter(knn["expression"].values())))
    header = ["space", "system"] + [f"K={k}" for k in ks]
    lines = [
        f"## {TITLES['pseudo_cell_generation']}",
        "",
        f"{section['n']} generated cells; mean unknown words per free-text cell: "
        f"{section['unknown_words_per_cell']:.2f}. "
        "`real_sentences`: the real cells of the same records (their own top-N sentences, the cell itself "
        "left out of the reference); `real_expression`: the same cells by full normalised expression. "
        + (
            "`model_constrained`: the model's gene-constrained answers (same sampling settings, exactly N "
            "distinct genes of its vocabulary)" + _draw_md(section.get("constrained_draw")) + ". "
            if "model_constrained" in knn["expression"]
            else ""
        )
        + "A K in brackets is the K actually used (fewer cells than K).",
        "",
    ]
    lines += ["### Generated sentences", ""] + ([CONSTRAINED_GENES, ""] if "model_constrained" in section else [])
    lines += _table(["system"] + [title for _, title in SENTENCE_COLUMNS], _sentence_rows(section))
    lines += ["### k-NN quality (%)", ""]
    lines += _table(header, _knn_rows(knn, "quality"))
    for metric, systems in PUBLISHED["pseudo_cell_generation"].items():
        lines.append(
            "Reference (" + SOURCE + "), " + metric + ": " + ", ".join(f"{s} {v:.2f}" for s, v in systems.items()) + "."
        )
    lines += ["", "### k-NN discriminability (%) (ChatCell's definition; self-vote included)", ""]
    lines += _table(header, _knn_rows(knn, "discriminability"))
    lines += ["### k-NN discriminability, leave-one-out (%) (our addition)", ""]
    lines += _table(header, _knn_rows(knn, "discriminability_loo"))
    if "distances" in section:
        lines += _distances_md(section["distances"])
    return lines


def _draw_md(draw: dict | None) -> str:
    """How the constrained pseudo-cells were drawn, as the end of a sentence ("" when unknown)."""
    if not draw or draw["candidates"] <= 1:
        return "; one sample per record, not reranked" if draw else ""
    mean = draw.get("mean_type_probability")
    return (
        f"; each the best of {draw['candidates']} samples by the model's own annotation (the candidate it "
        "gives the highest probability of the requested type"
        + (f", on average {100 * mean:.1f} %" if mean is not None else "")
        + "), so these numbers also reflect the model's annotation quality"
    )


def _distances_md(distances: dict) -> list[str]:
    systems = [name for name in ("model", "model_constrained", "real_sentences") if name in distances]
    types = sorted(set().union(*(distances[s]["per_type"] for s in systems)))
    rows = [
        [t] + [distances[s]["per_type"].get(t, {}).get(key) for s in systems for key in ("mmd", "frechet")]
        for t in types
    ]
    rows.append(["mean over types"] + [distances[s][f"mean_{key}"] for s in systems for key in ("mmd", "frechet")])
    header = ["cell type"] + [f"{s} {key}" for s in systems for key in ("MMD", "Frechet")]
    return [
        "### Distribution distances to the train split's real cells (lower is closer)",
        "",
        f"RBF-MMD (gamma {distances['gamma']:.4g}, median heuristic on the reference) and Frechet distance in "
        f"a {distances['pca_components']}-component PCA of reconstructed expression; types with at least two "
        "cells on both sides.",
        "",
    ] + _table(header, rows)


def render_markdown(metrics: dict) -> str:
    """report.md: one section per scored task, then the figures and notes."""
    lines = [
        "# ChatCell evaluation report",
        "",
        f"Data: `{metrics['data']}`, split `{metrics['split']}`, "
        f"{metrics['n_predictions']} predictions, N = {metrics['top_k']}.",
        f"Published numbers are shown for scale only: {SOURCE}.",
        "",
    ]
    tasks = metrics["tasks"]
    for task in task_registry.CLASSIFICATION:
        if task in tasks:
            lines += _classification_md(task, tasks[task])
    if "random_generation" in tasks:
        lines += _random_md(tasks["random_generation"])
    if "pseudo_cell_generation" in tasks:
        lines += _pseudo_md(tasks["pseudo_cell_generation"])
    if metrics.get("figures"):
        lines += ["## Figures", ""] + [f"![{Path(p).stem}]({p})" for p in metrics["figures"]] + [""]
    if metrics.get("notes"):
        lines += ["## Notes", ""] + [f"- {note}" for note in metrics["notes"]] + [""]
    return "\n".join(lines)
