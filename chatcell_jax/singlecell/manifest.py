"""The data manifest: what `chatcell prepare` (or the ChatCell-JSON conversion) made, and how.

One typed record, written by both prepare paths as `DATA_DIR/manifest.json` and copied next to every
trained model, and read (only through `load` / `read`) by the tokenizer, the trainer, inference and
evaluation. Above all it holds each source's `SentenceRecipe`: everything that decides a cell's
sentence, so that sentences for new cells (`chatcell annotate`) and the evaluation's real cells are
rebuilt exactly as the training sentences were (`chatcell_jax.singlecell.stream`).

Format versions: 2 (this one) stores a recipe per source and absolute source paths. Version 1
manifests are upgraded when read, except when a `--min-cells` gene filter dropped genes, which
version 1 did not record: then the error asks for the data to be prepared again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from chatcell_jax.errors import InputError
from chatcell_jax.singlecell.h5ad import MatrixSpec
from chatcell_jax.singlecell.inverse import InverseFit

FORMAT = "chatcell-jax/instructions"
VERSION = 2
DEFAULT_TOP_K = 100  # genes per sentence when the data does not say (ChatCell's length)
KINDS = ("cells", "drug", "chatcell-instructions")


@dataclass(frozen=True)
class SentenceRecipe:
    """Everything that decides a cell's sentence: matrix, gene filter, normalisation, order, length."""

    top_k: int = DEFAULT_TOP_K
    seed: int = 42  # the tie-break seed
    target_total: float = 1e4
    layer: str | None = None
    use_raw: bool = False
    gene_key: str | None = None
    require_integers: bool = True  # values must be counts (False: ranked as stored, e.g. TPM)
    dropped_genes: tuple[str, ...] = ()  # symbols removed by the --min-cells filter

    @property
    def matrix(self) -> MatrixSpec:
        return MatrixSpec(self.layer, self.use_raw)

    def for_file(
        self,
        *,
        layer: str | None = None,
        use_raw: bool = False,
        gene_key: str | None = None,
        allow_non_integer: bool = False,
    ) -> SentenceRecipe:
        """The recipe for another file whose counts or symbols sit elsewhere (given values win)."""
        recipe = self
        if layer or use_raw:
            recipe = replace(recipe, layer=layer, use_raw=use_raw)
        if gene_key:
            recipe = replace(recipe, gene_key=gene_key)
        return replace(recipe, require_integers=False) if allow_non_integer else recipe


@dataclass(frozen=True)
class Source:
    """One input file and what prepare made of it; `recipe` is None for ChatCell-Instructions."""

    path: str
    kind: str
    recipe: SentenceRecipe | None = None
    inverse_fit: InverseFit | None = None
    stats: dict[str, Any] = field(default_factory=dict)  # cells and genes dropped, seconds, ...


@dataclass(frozen=True)
class Labels:
    cell_type: tuple[str, ...] = ()
    drug: tuple[str, ...] = ()
    response: tuple[str, ...] = ()


@dataclass(frozen=True)
class Manifest:
    sources: tuple[Source, ...]
    labels: Labels
    genes: dict[str, int]  # genes of the sentences -> how often they occur (most frequent first)
    dataset_genes: tuple[str, ...]  # every gene of the data set (the expression space)
    counts: dict[str, dict[str, int]]  # split -> task -> records, plus "total"
    top_k: int | None = None  # None: not fixed by prepare (converted ChatCell-Instructions)
    cells_per_split: dict[str, int] = field(default_factory=dict)
    inverse_fit: InverseFit | None = None  # of the cells source (or the first source)
    options: dict[str, Any] = field(default_factory=dict)  # the prepare options, as given

    @property
    def sentence_length(self) -> int:
        """Genes per sentence: what prepare used, or ChatCell's 100 when the data does not say."""
        return self.top_k or DEFAULT_TOP_K

    def source(self, kind: str) -> Source | None:
        return next((s for s in self.sources if s.kind == kind), None)

    def recipe(self, kind: str = "cells") -> SentenceRecipe:
        """The sentence recipe of the `kind` source ("cells" or "drug")."""
        source = self.source(kind)
        if source is None or source.recipe is None:
            raise InputError(
                f"the data manifest has no {kind!r} source prepared from an .h5ad, so there is no "
                "sentence recipe to build its cells' sentences with; prepare the data with "
                "`chatcell prepare`"
            )
        return source.recipe

    def labels_of(self, label_set: str) -> list[str]:
        return list(getattr(self.labels, label_set))

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "top_k": self.top_k,
            "options": self.options,
            "sources": [_source_json(s) for s in self.sources],
            "inverse_transform": self.inverse_fit.to_dict() if self.inverse_fit else None,
            "labels": {k: list(v) for k, v in asdict(self.labels).items()},
            "counts": self.counts,
            "cells_per_split": self.cells_per_split,
            "genes": self.genes,
            "dataset_genes": list(self.dataset_genes),
        }

    def write(self, directory: str | Path) -> Path:
        path = Path(directory) / "manifest.json"
        path.write_text(json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path


def _source_json(source: Source) -> dict:
    out = {"path": source.path, "kind": source.kind, **source.stats}
    out["recipe"] = (
        None if source.recipe is None else {**asdict(source.recipe), "dropped_genes": list(source.recipe.dropped_genes)}
    )
    out["inverse_transform"] = source.inverse_fit.to_dict() if source.inverse_fit else None
    return out


def load(data_dir: str | Path) -> Manifest:
    """The manifest of a prepared data directory."""
    path = Path(data_dir) / "manifest.json"
    if not path.is_file():
        raise InputError(f"{data_dir} has no manifest.json; build it with `chatcell prepare`")
    return read(path)


def read(path: str | Path) -> Manifest:
    """A manifest file (a data directory's, or the copy next to a model)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"cannot read the data manifest {path}: {err}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise InputError(f"{path} is not a chatcell-jax manifest (format {found!r})")
    version = data.get("version")
    if version not in (1, VERSION):
        raise InputError(
            f"{path} has manifest version {version!r}; this chatcell-jax reads versions 1 and "
            f"{VERSION}: prepare the data again with this version"
        )
    try:
        return from_json(data if version == VERSION else _upgrade_v1(data, path))
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(
            f"{path} is not a valid manifest ({type(err).__name__}: {err}); prepare the data again"
        ) from None


def from_json(data: dict) -> Manifest:
    fit = data.get("inverse_transform")
    return Manifest(
        sources=tuple(_source_from_json(s) for s in data["sources"]),
        labels=Labels(**{k: tuple(v or ()) for k, v in data["labels"].items()}),
        genes=dict(data["genes"]),
        dataset_genes=tuple(data["dataset_genes"]),
        counts=data["counts"],
        top_k=data.get("top_k"),
        cells_per_split=dict(data.get("cells_per_split") or {}),
        inverse_fit=InverseFit.from_dict(fit) if fit else None,
        options=dict(data.get("options") or {}),
    )


def _source_from_json(data: dict) -> Source:
    stats = {k: v for k, v in data.items() if k not in ("path", "kind", "recipe", "inverse_transform")}
    recipe = data.get("recipe")
    if recipe is not None:
        recipe = SentenceRecipe(**{**recipe, "dropped_genes": tuple(recipe.get("dropped_genes") or ())})
    fit = data.get("inverse_transform")
    return Source(str(data["path"]), str(data["kind"]), recipe, InverseFit.from_dict(fit) if fit else None, stats)


def _upgrade_v1(data: dict, path: Path) -> dict:
    """Version 1 kept the sentence settings in `options` (one set for every source)."""
    options = data.get("options") or {}
    source_options = options.get("source") or {}
    drug_options = options.get("drug") or {}
    sources = []
    for section in data["sources"]:
        section = dict(section)
        kind = section.get("kind")
        if kind in ("cells", "drug"):
            if section.get("genes_dropped_min_cells"):
                raise InputError(
                    f"{path} (manifest version 1) does not record which genes --min-cells dropped, so "
                    "its sentences cannot be rebuilt; prepare the data again with this version"
                )
            raw_drug = kind == "drug" and drug_options.get("values", "raw") == "raw"
            own = source_options if kind == "cells" else {}
            matrix = section.get("matrix", "X")
            section["recipe"] = {
                "top_k": int(data.get("top_k") or DEFAULT_TOP_K),
                "seed": int(options.get("seed", 42)),
                "target_total": float(section.get("target_total", 1e4)),
                "layer": matrix.removeprefix("layers/") if matrix.startswith("layers/") else None,
                "use_raw": matrix == "raw/X",
                "gene_key": own.get("gene_key"),
                "require_integers": not (raw_drug or source_options.get("allow_non_integer", False)),
                "dropped_genes": [],
            }
        sources.append(section)
    return {**data, "sources": sources, "version": VERSION}
