"""PNG figures of the report, drawn with matplotlib's Agg canvas (no display, no pyplot state).

Each function draws one figure into `path` and returns it. Figures are built on a bare
`matplotlib.figure.Figure`, so nothing here changes the process-wide backend of a caller who also
plots interactively.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

LOSS_FIELDS = ("loss", "train_loss", "valid_loss", "eval_loss", "val_loss")


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, format="png")
    return path


def confusion(path: Path, labels: Sequence[str], matrix: np.ndarray, title: str) -> Path:
    """Row-normalised confusion matrix (true rows, predicted columns + malformed), counts written in."""
    matrix = np.asarray(matrix)
    size = 2.5 + 0.55 * len(labels)
    figure = _figure(size + 1.5, size)
    ax = figure.add_subplot()
    totals = matrix.sum(axis=1, keepdims=True)
    shares = matrix / np.where(totals > 0, totals, 1)
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            ax.text(
                j, i, str(count), ha="center", va="center", fontsize=7, color="white" if shares[i, j] > 0.6 else "black"
            )
    columns = list(labels) + ["(malformed)"]
    ax.set_xticks(range(len(columns)), columns, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    figure.colorbar(image, ax=ax, fraction=0.04, label="share of the true class")
    return _save(figure, path)


def pca_cells(path: Path, data: dict) -> Path:
    """Generated cells (crosses) over real train cells (dots) in the reference PCA, coloured by type."""
    figure = _figure(8, 6)
    ax = figure.add_subplot()
    types = sorted(set(data["reference_types"].tolist()) | set(data["generated_types"].tolist()))
    colours = _colours(len(types))
    for colour, cell_type in zip(colours, types):
        ref = _xy(data["reference"][data["reference_types"] == cell_type])
        gen = _xy(data["generated"][data["generated_types"] == cell_type])
        ax.scatter(ref[:, 0], ref[:, 1], s=8, alpha=0.35, color=colour, label=f"{cell_type} (real)")
        if len(gen):
            ax.scatter(gen[:, 0], gen[:, 1], s=40, marker="x", color=colour, label=f"{cell_type} (generated)")
    explained = list(data.get("explained", [])) + [0.0, 0.0]
    ax.set_xlabel(f"PC1 ({100 * explained[0]:.1f} %)")
    ax.set_ylabel(f"PC2 ({100 * explained[1]:.1f} %)")
    ax.set_title("Pseudo-cells: generated (x) vs real train cells (.), reconstructed expression", fontsize=9)
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5), ncol=1)
    return _save(figure, path)


def _xy(points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, np.float64)
    points = points[:, None] if points.ndim == 1 else points
    return points if points.shape[1] >= 2 else np.column_stack([points[:, :1], np.zeros((len(points), 1))])


def _colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab20" if n > 10 else "tab10"]
    return [cmap(i % cmap.N) for i in range(n)]


def task_bars(path: Path, groups: dict[str, dict[str, float]]) -> Path:
    """Grouped bars: one group per task headline metric, one bar per system (model and baselines)."""
    systems = list(dict.fromkeys(name for bars in groups.values() for name in bars))
    figure = _figure(max(6, 2.2 * len(groups)), 4.5)
    ax = figure.add_subplot()
    width = 0.8 / max(len(systems), 1)
    colours = _colours(len(systems))
    for s, (system, colour) in enumerate(zip(systems, colours)):
        xs = [g + (s - (len(systems) - 1) / 2) * width for g, bars in enumerate(groups.values()) if system in bars]
        ys = [bars[system] for bars in groups.values() if system in bars]
        ax.bar(xs, ys, width=width, color=colour, label=system)
    ax.set_xticks(range(len(groups)), list(groups), fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_ylabel("%")
    ax.set_title("Headline metric per task: model vs baselines (same cells)", fontsize=9)
    ax.legend(fontsize=7)
    return _save(figure, path)


def read_training_log(path: Path) -> dict[str, list[tuple[float, float]]]:
    """{series: [(step, value)]} from a metrics.jsonl; unreadable lines and fields are skipped."""
    series: dict[str, list[tuple[float, float]]] = {}
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(row, dict):
                continue
            step = row.get("step", number)
            for key in LOSS_FIELDS:
                value = row.get(key)
                if isinstance(value, (int, float)) and isinstance(step, (int, float)) and np.isfinite(value):
                    series.setdefault(key, []).append((float(step), float(value)))
    return series


def training_curve(path: Path, series: dict[str, list[tuple[float, float]]]) -> Path:
    figure = _figure(7, 4)
    ax = figure.add_subplot()
    for name, points in series.items():
        steps, values = zip(*points)
        ax.plot(steps, values, marker="o" if len(points) < 30 else None, markersize=3, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Training curve", fontsize=9)
    ax.legend(fontsize=8)
    return _save(figure, path)
