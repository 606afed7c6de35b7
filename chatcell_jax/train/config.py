"""Compatibility alias: the run config lives in `chatcell_jax.config`."""
from chatcell_jax.config import TrainConfig, load_config, save_config

__all__ = ["TrainConfig", "load_config", "save_config"]
