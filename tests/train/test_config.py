"""The run config: YAML + --set overrides, typed; unknown keys and bad values are named errors."""

from pathlib import Path

import pytest

from chatcell_jax.errors import InputError
from chatcell_jax.train.config import TrainConfig, load_config, read_saved_config, save_config

REQUIRED = ["data=d", "tokenizer=t"]


def test_yaml_then_overrides_with_types(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 7\nlearning_rate: 1\nmesh: [2, 2, 2]\nshuffle: false\n")
    config = load_config(path, REQUIRED + ["steps=9", "mesh=1,4,2", "dtype=bfloat16", "z_loss=1e-4"])
    assert config.steps == 9 and config.learning_rate == 1.0 and isinstance(config.learning_rate, float)
    assert config.mesh == [1, 4, 2] and config.shuffle is False and config.dtype == "bfloat16"
    assert config.z_loss == pytest.approx(1e-4)
    assert load_config(None, REQUIRED + ["mesh=[-1,1,2]"]).mesh == [-1, 1, 2]


@pytest.mark.parametrize(
    "override, named",
    [
        ("stepz=3", "stepz"),
        ("steps=three", "steps"),
        ("steps=1.5", "steps"),
        ("learning_rate=fast", "learning_rate"),
        ("optimizer=sgd", "optimizer"),
        ("mesh=[2,2]", "mesh"),
        ("mesh=[-1,-1,2]", "mesh"),
        ("batch_size=0", "batch_size"),
        ("dropout_rate=1.5", "dropout_rate"),
        ("overwrite=maybe", "overwrite"),
        ("padding=tight", "padding"),
        ("loss_normalization=sequence", "loss_normalization"),
        ("task_sampling=balanced", "task_sampling"),
        ("task_sampling={annotaton: 2}", "annotaton"),
        ("task_weights={annotation: -1}", "task_weights"),
        ("task_weights=[1, 2]", "task_weights"),
        ("decoder_input_dropout=1", "decoder_input_dropout"),
    ],
)
def test_bad_keys_and_values_are_named(override, named):
    with pytest.raises(InputError, match=named):
        load_config(None, REQUIRED + [override])


def test_required_and_malformed(tmp_path):
    with pytest.raises(InputError, match="'data' is required"):
        load_config(None, ["tokenizer=t"])
    with pytest.raises(InputError, match="key=value"):
        load_config(None, REQUIRED + ["steps"])
    with pytest.raises(InputError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(InputError, match="mapping"):
        load_config(tmp_path / "list.yaml")
    with pytest.raises(InputError, match="grad_accum_steps"):
        load_config(None, REQUIRED + ["batch_size=6", "grad_accum_steps=4"])


def test_saved_config_round_trips(tmp_path):
    config = load_config(None, REQUIRED + ["mesh=[2,1,4]", "steps=5"])
    save_config(config, tmp_path)
    assert load_config(None, [], base=read_saved_config(tmp_path)) == config
    with pytest.raises(InputError, match="nothing to resume"):
        read_saved_config(tmp_path / "nope")


def test_every_shipped_train_config_loads():
    paths = sorted(Path(__file__).resolve().parents[2].glob("configs/train/*.yaml"))
    assert paths
    for path in paths:
        config = load_config(path, REQUIRED)
        assert isinstance(config, TrainConfig) and config.steps > 0, path


def test_task_maps_parse_from_set_and_yaml(tmp_path):
    config = load_config(
        None,
        REQUIRED
        + [
            "task_sampling={annotation: 4, drug_sensitivity: 1}",
            "task_weights={annotation: 2}",
            "loss_normalization=tasks",
        ],
    )
    assert config.task_sampling == {"annotation": 4.0, "drug_sensitivity": 1.0}
    assert config.task_weight_vector() == (1.0, 1.0, 2.0, 1.0, 1.0)  # random, pseudo, annotation, drug, other
    assert load_config(None, REQUIRED + ["task_sampling=uniform"]).task_sampling == "uniform"
