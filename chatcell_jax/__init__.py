"""chatcell-jax: ChatCell (single-cell analysis through natural-language instructions) in JAX/Flax."""

__version__ = "0.1.0"
