"""The data manifest: one typed record, one loader that checks the format and version."""

import json

import pytest

from chatcell_jax.errors import InputError
from chatcell_jax.singlecell import manifest as manifest_lib
from chatcell_jax.singlecell import prepare as ins


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("m") / "data"
    opts = ins.PrepareOptions(top_k=30, seed=3, source=ins.SourceOptions(target_total="median"))
    return out, ins.prepare_dataset(out, cells_input=ins.demo_data_path(), options=opts)


def test_written_manifest_reads_back_equal(prepared):
    out, written = prepared
    read = manifest_lib.load(out)
    assert read == written
    recipe = read.recipe("cells")
    assert (recipe.top_k, recipe.seed, recipe.require_integers) == (30, 3, True) and recipe.target_total > 0
    assert read.sentence_length == 30 and read.source("drug") is None
    assert read.source("cells").path == str(ins.demo_data_path().resolve())  # absolute: found from any directory
    with pytest.raises(InputError, match="no 'drug' source"):
        read.recipe("drug")


def v1_of(manifest_json: dict) -> dict:
    """The same data as version 1 wrote it: sentence settings in `options`, none per source."""
    sources = []
    for source in manifest_json["sources"]:
        recipe = source.pop("recipe")
        sources.append({**source, "target_total": recipe["target_total"]})
    return {**manifest_json, "version": 1, "sources": sources}


def test_version_1_is_upgraded(prepared, tmp_path):
    out, written = prepared
    (tmp_path / "manifest.json").write_text(json.dumps(v1_of(written.to_json())))
    assert manifest_lib.load(tmp_path).recipe("cells") == written.recipe("cells")


def test_version_1_with_a_gene_filter_asks_to_prepare_again(prepared, tmp_path):
    out, written = prepared
    old = v1_of(written.to_json())
    old["sources"][0]["genes_dropped_min_cells"] = 4
    (tmp_path / "manifest.json").write_text(json.dumps(old))
    with pytest.raises(InputError, match="prepare the data again"):
        manifest_lib.load(tmp_path)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "cannot read the data manifest"),
        ('{"format": "something-else"}', "is not a chatcell-jax manifest"),
        ('["a list"]', "is not a chatcell-jax manifest"),
        ('{"format": "chatcell-jax/instructions", "version": 99}', "manifest version 99"),
        ('{"format": "chatcell-jax/instructions", "version": 2, "sources": []}', "not a valid manifest"),
    ],
)
def test_bad_manifests_are_named(tmp_path, content, message):
    (tmp_path / "manifest.json").write_text(content)
    with pytest.raises(InputError, match=message):
        manifest_lib.load(tmp_path)


def test_missing_manifest(tmp_path):
    with pytest.raises(InputError, match="has no manifest.json"):
        manifest_lib.load(tmp_path)
