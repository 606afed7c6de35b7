"""The T5 model: config, parameters, module and vocabulary extension."""

from chatcell_jax.model.config import T5Config, load_preset, padded_vocab_size, preset_names
from chatcell_jax.model.params import count_params, param_specs
from chatcell_jax.model.t5 import PAD_LOGIT, T5
from chatcell_jax.model.vocab import extend_vocab

__all__ = [
    "T5",
    "T5Config",
    "PAD_LOGIT",
    "count_params",
    "extend_vocab",
    "load_preset",
    "padded_vocab_size",
    "param_specs",
    "preset_names",
]
