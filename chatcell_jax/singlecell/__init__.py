"""The single-cell side: `.h5ad` cells -> cell sentences -> instruction records (no JAX here).

tasks.py         the task registry: each of the four tasks declared once
h5ad.py          streaming reads of an `.h5ad` matrix, its genes and cells
cells.py         sentences: normalise, rank and cut each cell's genes (and count thinning)
stream.py        the one sentence stream (prepare, inference prompts, evaluation's real cells)
manifest.py      the data manifest: sources, sentence recipes, labels, vocabulary
inverse.py       rank -> expression fit, to turn generated sentences back into expression
templates.py     the instruction phrasings of the four tasks
records.py       instruction records (JSONL, ChatCell-Instructions JSON) and their splits
chatcell_json.py the published ChatCell-Instructions files -> a prepared data directory
prepare.py       `chatcell prepare`: splits, records and the data manifest
"""
