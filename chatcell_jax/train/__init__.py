"""Training: the jitted sharded step, optimizer, loss, Orbax checkpoints, metrics and the loop.

from chatcell_jax.train.config import load_config
from chatcell_jax.train import train
run_dir = train(load_config("configs/train/demo.yaml", ["data=...", "tokenizer=..."]))
"""

from chatcell_jax.train.trainer import Trainer, train

__all__ = ["Trainer", "train"]
