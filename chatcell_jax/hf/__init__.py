"""Hugging Face interop: HF T5 directories to and from our model directory (`chatcell_jax.model.directory`).

    chatcell_jax.hf.convert.import_hf(hf_dir, out_dir)     HF T5 directory -> our model directory
    chatcell_jax.hf.convert.export_hf(model_ref, out_dir)  any model reference -> HF directory
    chatcell_jax.hf.convert.save_hf(model, out_dir)        a T5 module -> HF directory
    chatcell_jax.hf.mapping                                the parameter name and layout mapping
    chatcell_jax.hf.files                                  reading HF weights and tokenizer files

Conversion uses numpy and safetensors only; torch is needed just to read pytorch_model.bin.
Nothing is imported here, so `chatcell_jax.model.directory` (which reads HF directories too) and
this package can import each other's modules without a cycle.
"""
