"""Serving a trained model: decoding, the generator, prompts, batch jobs, chat and the web app.

decoding.py     jit-compiled greedy, beam search and sampling (free or gene-constrained)
generation.py   `Generator`: a model + tokenizer on a mesh, batched prompts -> answers
loading.py      finding a model and its data manifest from any model reference
prompts.py      inference prompts and sentences for new cells, plain-language questions
pseudocells.py  self-consistent pseudo-cells (best of K samples by the model's own annotation)
jobs.py         batch jobs: generate JSONL, annotate / predict-drug `.h5ad`, generate cells
chat.py         the chat engine behind `chatcell chat` and the web page
web/            the FastAPI app and its page
"""
