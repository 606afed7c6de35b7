"""The peer of the benchmarks: a seeded random Hugging Face T5 of a named shape, saved and loaded back."""

from __future__ import annotations

from pathlib import Path

SHAPES = {
    "tiny": dict(d_model=128, d_kv=32, d_ff=512, num_layers=2, num_decoder_layers=2, num_heads=4),
    "t5-small": dict(d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_decoder_layers=6, num_heads=8),
    "t5-base": dict(d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_decoder_layers=12, num_heads=12),
}


def random_hf_t5(shape: str, vocab: int, directory: Path):
    """A v1.0 `T5ForConditionalGeneration` (seed 0, no dropout) saved to `directory`, which our
    side loads too, so both run the same weights."""
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.T5Config(
        vocab_size=vocab,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
        feed_forward_proj="relu",
        tie_word_embeddings=True,
        dropout_rate=0.0,
        **SHAPES[shape],
    )
    model = transformers.T5ForConditionalGeneration(cfg)
    model.save_pretrained(directory)
    return model
