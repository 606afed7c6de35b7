"""Benchmark: sequences/s of our jitted searches vs transformers `generate()`, same weights, same prompts.

A random T5 of the chosen shape is built in transformers, saved, and loaded into ours, so both run
the same weights. Prompts are random token ids of a cell-sentence instruction's length (128).
`min_new_tokens = max_new_tokens` forces exactly N new tokens in both, so the work is equal.
Our compile time is reported on its own and excluded from the rate (it is paid once per shape).
Each search is timed `--repeats` times, ours and transformers alternating, and the fastest run of
each is reported (the least disturbed by anything else on the machine). Every timed run starts after
a one-second pause: torch's OpenMP threads spin for a while after each call, and a run started
inside that window competes with them for the cores.

Run:  .venv/bin/python scripts/bench_generate.py [--shape tiny|t5-small] [--batch 16] [--new-tokens 100]
      [--vocab 32128] [--repeats 3]
Needs torch (the `hf` extra). On a GPU machine, ours runs on the GPU and transformers on CUDA when
torch sees one.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from hf_peer import SHAPES, random_hf_t5

PAUSE_S = 1.0  # before every timed run (see the module docstring)


def build(shape: str, vocab: int, directory: Path):
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return random_hf_t5(shape, vocab, directory).eval().to(device), device


def hf_runner(model, device, ids, **kwargs):
    """A function running transformers' generate() once, warmed up, returning its seconds."""
    import torch

    x = torch.tensor(ids, device=device)
    warm = {k: v for k, v in kwargs.items() if k not in ("max_new_tokens", "min_new_tokens")}
    with torch.no_grad():
        model.generate(input_ids=x[:2], attention_mask=x[:2] != 0, max_new_tokens=4, **warm)

    def run() -> float:
        time.sleep(PAUSE_S)
        with torch.no_grad():
            start = time.perf_counter()
            model.generate(input_ids=x, attention_mask=x != 0, **kwargs)
            if device == "cuda":
                torch.cuda.synchronize()
        return time.perf_counter() - start

    return run


def our_runner(config, params, ids, cfg):
    """(a function running our jitted search once and returning its seconds, compile seconds)."""
    from chatcell_jax.serve.decoding import row_keys
    from chatcell_jax.serve.generation import _search

    search = jax.jit(lambda p, i, m, k: _search(config, cfg, p, i, m, k))
    x = jnp.asarray(ids, jnp.int32)
    keys = row_keys(0, jnp.arange(x.shape[0]))
    start = time.perf_counter()
    jax.block_until_ready(search(params, x, x != 0, keys))
    compile_s = time.perf_counter() - start

    def run() -> float:
        time.sleep(PAUSE_S)
        start = time.perf_counter()
        jax.block_until_ready(search(params, x, x != 0, keys))
        return time.perf_counter() - start

    return run, compile_s


def main() -> None:
    from chatcell_jax.model.directory import load_model
    from chatcell_jax.serve.decoding import GenerationConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=100)
    parser.add_argument("--prompt-length", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=32128)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each; the fastest is reported")
    args = parser.parse_args()
    ids = np.random.default_rng(0).integers(2, args.vocab, size=(args.batch, args.prompt_length))
    n = args.new_tokens
    with tempfile.TemporaryDirectory() as tmp:
        hf_model, device = build(args.shape, args.vocab, Path(tmp))
        config, model, _ = load_model(tmp)
        params = model.params()
    runs = [
        (
            "beam search, 4 beams",
            GenerationConfig(max_new_tokens=n, min_new_tokens=n, num_beams=4),
            dict(num_beams=4, do_sample=False),
        ),
        (
            "sampling top-k 50 / top-p 0.95",
            GenerationConfig(max_new_tokens=n, min_new_tokens=n, do_sample=True, top_k=50, top_p=0.95),
            dict(do_sample=True, top_k=50, top_p=0.95),
        ),
        ("greedy", GenerationConfig(max_new_tokens=n, min_new_tokens=n), dict(num_beams=1, do_sample=False)),
    ]
    print(
        f"shape {args.shape}, vocab {args.vocab}, batch {args.batch}, prompt {args.prompt_length} tokens, "
        f"{n} new tokens, fastest of {args.repeats}; "
        f"ours on {jax.devices()[0].platform}, transformers on {device}\n"
    )
    print("| search | ours seq/s | transformers seq/s | ratio | our compile (s) |\n|---|---|---|---|---|")
    for name, cfg, hf_kwargs in runs:
        ours, compile_s = our_runner(config, params, ids, cfg)
        theirs = hf_runner(hf_model, device, ids, max_new_tokens=n, min_new_tokens=n, **hf_kwargs)
        times = [(ours(), theirs()) for _ in range(args.repeats)]
        ours_s, hf_s = min(t[0] for t in times), min(t[1] for t in times)
        print(
            f"| {name} | {args.batch / ours_s:.2f} | {args.batch / hf_s:.2f} | {hf_s / ours_s:.1f}x "
            f"| {compile_s:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
