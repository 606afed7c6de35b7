"""Bad input to `chatcell train` is one clear InputError naming the problem and the fix."""

import jax
import pytest

from chatcell_jax.cli import main
from chatcell_jax.errors import InputError
from chatcell_jax.train import Trainer, train
from tests.helpers.train import demo_config, prepare


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepare(tmp_path_factory.mktemp("errors"))


def _config(prepared, out, *extra):
    return demo_config(prepared, out, "steps=1", "batch_size=8", "dropout_rate=0", *extra)


def test_unknown_key_on_the_command_line(capsys):
    assert main(["train", "--set", "data=d", "--set", "tokenizer=t", "--set", "learning_rat=0.1"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key(s) ['learning_rat']" in err and "learning_rate" in err


@pytest.mark.parametrize("mesh, message", [("[3,1,1]", "needs 3 devices"), ("[-1,3,1]", "does not divide 8 devices")])
def test_mesh_that_does_not_divide_the_devices(prepared, tmp_path, mesh, message):
    with pytest.raises(InputError, match=message):
        Trainer(_config(prepared, tmp_path / "run", f"mesh={mesh}"))
    assert not (tmp_path / "run").exists()


def test_batch_not_divisible_by_data_axes(prepared, tmp_path):
    with pytest.raises(InputError, match=r"batch_size 6 is not divisible .*data x fsdp = 4.*multiple of 4"):
        Trainer(_config(prepared, tmp_path / "run", "mesh=[2,2,2]", "batch_size=6"))
    with pytest.raises(InputError, match=r"grad_accum_steps \(2\) = 16"):
        Trainer(_config(prepared, tmp_path / "run", "mesh=[8,1,1]", "batch_size=8", "grad_accum_steps=2"))


def test_missing_data_and_tokenizer(prepared, tmp_path):
    with pytest.raises(InputError, match="data directory .*nowhere does not exist.*chatcell prepare"):
        Trainer(_config(prepared, tmp_path / "run", f"data={tmp_path / 'nowhere'}"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no train.jsonl"):
        Trainer(_config(prepared, tmp_path / "run", f"data={tmp_path / 'empty'}"))
    with pytest.raises(InputError, match="tokenizer directory .* does not exist"):
        Trainer(_config(prepared, tmp_path / "run", f"tokenizer={tmp_path / 'no_tok'}"))


def test_checkpoint_of_another_model_shape(prepared, tmp_path):
    small = tmp_path / "small.yaml"
    small.write_text("d_model: 64\nd_kv: 16\nd_ff: 128\nnum_layers: 1\nnum_heads: 4\nfeed_forward_proj: relu\n")
    out = tmp_path / "run"
    train(_config(prepared, out, f"model={small}", "mesh=[1,1,1]"), progress=False, devices=jax.devices()[:1])
    assert (out / "checkpoints" / "1").is_dir()
    with pytest.raises(InputError, match=r"run directory .* exists; pass --resume"):
        Trainer(_config(prepared, out, "mesh=[1,1,1]"), devices=jax.devices()[:1])
    with pytest.raises(
        InputError, match=r"holds '[a-z_/]+' with shape \(64,\), but this model needs \(128,\).*another model shape"
    ):
        Trainer(_config(prepared, out, "model=tiny", "mesh=[1,1,1]"), resume=True, devices=jax.devices()[:1])


def test_a_failed_start_leaves_no_run_directory(prepared, tmp_path):
    """The corrected rerun must not be refused because the failed one left RUN/config.json."""
    with pytest.raises(InputError, match="exceeds the .* training examples; lower batch_size"):
        Trainer(_config(prepared, tmp_path / "run", "batch_size=100000"))
    assert not (tmp_path / "run").exists()
    Trainer(_config(prepared, tmp_path / "run"))  # the corrected start goes ahead
    assert (tmp_path / "run" / "config.json").is_file()
