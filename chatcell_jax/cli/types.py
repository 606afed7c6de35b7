"""argparse types for numbers with a range, so `--batch-size 0` is a one-line usage error, not a traceback."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from chatcell_jax.seed import MAX_SEED


def int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer from `low` (to `high`)."""
    span = f"from {low} to {high}" if high is not None else f"at least {low}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {span}, got {value}")
        return value

    parse.__name__ = f"integer {span}"  # argparse names the type in some messages
    return parse


positive_int = int_in(1)
nonnegative_int = int_in(0)
seed_int = int_in(0, MAX_SEED)
port_int = int_in(1, 65535)
