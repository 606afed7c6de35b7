"""Compatibility alias: the training loop lives in `chatcell_jax.train.trainer`."""
from chatcell_jax.train.trainer import train

__all__ = ["train"]
