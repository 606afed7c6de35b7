"""`chatcell train`'s last line says what the run holds (issue 15: not "with manifest" when it has none)."""

from chatcell_jax.cli.train import _outputs


def test_the_summary_names_only_what_is_there(tmp_path):
    (tmp_path / "model" / "tokenizer").mkdir(parents=True)
    (tmp_path / "config.json").write_text("{}")
    assert _outputs(tmp_path) == ["model/ (with tokenizer)", "config.json"]
    (tmp_path / "model" / "manifest.json").write_text("{}")
    (tmp_path / "checkpoints").mkdir()
    assert _outputs(tmp_path) == ["model/ (with tokenizer and manifest.json)", "checkpoints/", "config.json"]
