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


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `chatcell CMD: error: ... (chatcell CMD --help)`, exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="chatcell",
        description="Single-cell analysis in plain language: "
        "cell sentences, a T5 that knows every gene, and the commands around it.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"chatcell_jax.cli.{name}").register(subparsers)
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Arguments, with one fix to argparse: an optional positional (`chat MODEL [QUESTION]`) given
    after an option (`chat MODEL --manifest M "question"`) is not matched by argparse, which
    fills both positionals when it meets the first; a command names such a positional with
    `set_defaults(late_positional=NAME)` and a single leftover word fills it."""
    args, extra = parser.parse_known_args(argv)
    late = getattr(args, "late_positional", None)
    if extra and late and getattr(args, late) is None and len(extra) == 1 and not extra[0].startswith("-"):
        setattr(args, late, extra.pop())
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse(parser, argv)
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
