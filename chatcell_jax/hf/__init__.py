"""Hugging Face interop and our model directory.

    import_hf(hf_dir, out_dir)                      HF T5 directory -> our model directory
    export_hf(model_ref, out_dir)                   any model reference -> HF directory
    save_hf(model, out_dir, tokenizer_dir=None)     a T5 module -> HF directory
    load_model(model_ref, mesh=None) -> (config, model, tokenizer_dir | None)
    save_model(model, config, out_dir, tokenizer_dir=None)

Conversion uses numpy and safetensors only; torch is needed just to read pytorch_model.bin.
"""
from chatcell_jax.hf.convert import export_hf, import_hf, save_hf
from chatcell_jax.hf.model_dir import load_model, save_model

__all__ = ["export_hf", "import_hf", "load_model", "save_hf", "save_model"]
