"""The `chatcell` command: parses arguments and calls the package's public functions.

Each sub-command lives in its own module under `chatcell_jax.cli` and exposes
`register(subparsers)`, which adds its parser and sets `func` to a callable taking the parsed
arguments and returning an exit code. Heavy imports (jax, transformers) happen inside those
callables so `chatcell --help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from chatcell_jax.errors import InputError

# Order is the order of the help text: the pipeline's order.
COMMAND_MODULES = ["prepare", "tokenizer", "train", "score", "chat", "evaluate", "convert"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatcell",
        description="Single-cell analysis in plain language: "
        "cell sentences, a T5 that knows every gene, and the commands around it.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"chatcell_jax.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except (InputError, FileNotFoundError) as err:
        print(f"chatcell {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
