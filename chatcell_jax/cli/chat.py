"""`chatcell chat` (interactive or one-shot) and `chatcell web` (a local page + JSON API)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from chatcell_jax.cli.score import add_candidates_argument, add_model_arguments
from chatcell_jax.cli.types import port_int
from chatcell_jax.serve.options import MODES
from chatcell_jax.serve.pseudocells import DEFAULT_CANDIDATES, check_candidates


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("chat", help="ask questions in plain language (one-shot or interactive)")
    add_model_arguments(p, devices="1")
    p.add_argument("question", nargs="?", help="one question; without it, read questions from the prompt/stdin")
    p.add_argument(
        "--mode",
        choices=MODES,
        default="sample",
        help="decoding for generation questions (default: ChatCell's sampling settings)",
    )
    p.add_argument("--num-beams", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--free",
        action="store_true",
        help="answer generation questions with free text (default: gene-constrained, exactly N distinct "
        "genes of the model's vocabulary, N from the question or the training top-N)",
    )
    add_candidates_argument(p, "questions for a cell of a named type")
    p.set_defaults(func=run_chat, late_positional="question")

    p = subparsers.add_parser(
        "web",
        help="serve a local chat page and JSON API",
        description="Serve a local chat page and POST /api/generate. Generation questions are "
        'gene-constrained unless a request sets "free": true (a checkbox on '
        'the page); a cell of a named type is the best of "candidates" '
        f"samples (default {DEFAULT_CANDIDATES}) by the model's own annotation.",
    )
    add_model_arguments(p, devices="1")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    p.add_argument("--port", type=port_int, default=7860)
    p.add_argument("--data", type=Path, help="prepared data directory, for example sentences")
    p.set_defaults(func=run_web)


def load_engine(args: argparse.Namespace, data_dir: Path | None = None):
    from chatcell_jax.serve.chat import ChatEngine, example_sentences
    from chatcell_jax.serve.loading import load_generator, require_manifest

    generator, manifest = load_generator(
        args.model,
        manifest=args.manifest,
        batch_size=min(args.batch_size, 8),
        max_source_length=args.max_source_length,
        devices=args.devices,
        dtype=args.dtype,
    )
    manifest = require_manifest(manifest, f"chatcell {args.command}")
    return ChatEngine(generator, manifest, example_sentences(manifest, data_dir))


def format_answer(result: dict) -> str:
    lines = [f"[{result['task'].replace('_', ' ')}] {result['output']}"]
    if result.get("label_probs"):
        top = list(result["label_probs"].items())[:5]
        lines += [f"  {p:6.1%}  {label}" for label, p in top]
    lines += [f"  note: {note}" for note in result.get("notes", [])]
    return "\n".join(lines)


def run_chat(args: argparse.Namespace) -> int:
    from chatcell_jax.errors import InputError
    from chatcell_jax.serve.options import chat_decoding

    options = {
        "mode": args.mode,
        "num_beams": args.num_beams,
        "seed": args.seed,
        "free": args.free,
        "candidates": check_candidates(args.candidates),
    }
    chat_decoding(options)  # checked before loading the model
    engine = load_engine(args)
    if args.question:
        print(format_answer(engine.answer([args.question], options)[0]))
        return 0
    interactive = sys.stdin.isatty()
    if interactive:
        print("Ask a single-cell question (empty line or Ctrl-D to quit). Examples:")
        for task, prompts in engine.examples().items():
            print(f"  {prompts[0][:110]}")
    while True:
        if interactive:
            print("> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line or not line.strip():
            return 0
        try:
            print(format_answer(engine.answer([line.strip()], options)[0]), flush=True)
        except InputError as err:  # one bad question does not end the session
            print(f"error: {err}", flush=True)


def run_web(args: argparse.Namespace) -> int:
    import uvicorn

    from chatcell_jax.serve.web.server import create_app

    engine = load_engine(args, args.data)
    print(f"chatcell web: http://{args.host}:{args.port}/ (Ctrl-C to stop)", flush=True)
    uvicorn.run(create_app(engine), host=args.host, port=args.port, log_level="warning")
    return 0
