"""The user's decoding options, checked in one place for `generate`, `generate-cells`, `chat` and the web API.

`DecodingOptions` holds what a user may set (a mode and Hugging Face-style settings) and turns it
into the `GenerationConfig` a search runs with. Building one checks every option: a wrong type or a
value out of range is an `InputError` that names the option (its API name and CLI flag), the range
and the fix, raised before any model work. Nothing is silently ignored: a setting that the chosen
mode does not use, set to something other than its default, is an error too (say, several return
sequences without beam search). The module imports no JAX, so the CLI checks options before
loading anything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Literal

from chatcell_jax.errors import InputError
from chatcell_jax.seed import MAX_SEED

if TYPE_CHECKING:
    from chatcell_jax.serve.decoding import GenerationConfig

MODES = ("beam", "greedy", "sample")
EARLY_STOPPING = {"false": False, "true": True, "never": "never"}


def _name(field: str) -> str:
    return f"{field} (--{field.replace('_', '-')})"


def _check_int(field: str, value: Any, low: int, high: int | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InputError(f"{_name(field)} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise InputError(f"{_name(field)} must be {span}, got {value}")


def _check_float(field: str, value: Any) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise InputError(f"{_name(field)} must be a finite number, got {value!r}")


@dataclass(frozen=True)
class DecodingOptions:
    """What a user sets; `generation_config` gives the search's settings."""

    mode: Literal["beam", "greedy", "sample"] = "beam"
    num_beams: int = 4  # beam mode
    num_return_sequences: int = 1  # beam mode: at most num_beams
    length_penalty: float = 1.0
    early_stopping: bool | Literal["never"] = False  # beam mode
    max_new_tokens: int | None = None  # None: the answer's length (N genes) + 16
    min_new_tokens: int = 0
    temperature: float = 1.0  # sample mode, > 0
    top_k: int = 50  # sample mode, 0 = off
    top_p: float = 0.95  # sample mode, in (0, 1]
    no_repeat_ngram_size: int | None = None  # None: 2 when sampling (ChatCell's setting), else 0
    seed: int = 0  # 0 .. MAX_SEED

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"{_name('mode')} must be one of {', '.join(MODES)}, got {self.mode!r}")
        _check_int("num_beams", self.num_beams, 1)
        _check_int("num_return_sequences", self.num_return_sequences, 1)
        if self.mode == "beam" and self.num_return_sequences > self.num_beams:
            raise InputError(
                f"{_name('num_return_sequences')} ({self.num_return_sequences}) cannot exceed "
                f"{_name('num_beams')} ({self.num_beams}); raise num_beams or ask for fewer sequences"
            )
        if self.mode != "beam" and self.num_return_sequences != 1:
            raise InputError(f"{_name('num_return_sequences')} above 1 needs mode beam (got mode {self.mode})")
        if not (isinstance(self.early_stopping, bool) or self.early_stopping == "never"):
            raise InputError(f"{_name('early_stopping')} must be true, false or never, got {self.early_stopping!r}")
        if self.max_new_tokens is not None:
            _check_int("max_new_tokens", self.max_new_tokens, 1)
        _check_int("min_new_tokens", self.min_new_tokens, 0)
        _check_float("length_penalty", self.length_penalty)
        _check_float("temperature", self.temperature)
        if self.temperature <= 0:
            raise InputError(
                f"{_name('temperature')} must be greater than 0, got {self.temperature}; for the single most "
                "likely answer use mode greedy"
            )
        _check_int("top_k", self.top_k, 0)
        _check_float("top_p", self.top_p)
        if not 0 < self.top_p <= 1:
            raise InputError(f"{_name('top_p')} must be in (0, 1], got {self.top_p}")
        if self.no_repeat_ngram_size is not None:
            _check_int("no_repeat_ngram_size", self.no_repeat_ngram_size, 0)
        _check_int("seed", self.seed, 0, MAX_SEED)

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any], **defaults: Any) -> DecodingOptions:
        """From an API / chat options dict (other keys, such as `free`, are ignored here)."""
        known = {f.name for f in fields(cls)}
        values = {**defaults, **{k: v for k, v in options.items() if k in known and v is not None}}
        if isinstance(values.get("early_stopping"), str):
            values["early_stopping"] = _early_stopping(values["early_stopping"])
        return cls(**values)

    def generation_config(self, default_new_tokens: int) -> GenerationConfig:
        """The search's settings; `default_new_tokens` when max_new_tokens is not set."""
        from chatcell_jax.serve.decoding import CHATCELL_SAMPLING, GenerationConfig  # JAX, only when decoding

        max_new = self.max_new_tokens or default_new_tokens
        if self.min_new_tokens > max_new:
            raise InputError(
                f"{_name('min_new_tokens')} ({self.min_new_tokens}) cannot exceed {_name('max_new_tokens')} ({max_new})"
            )
        common = dict(max_new_tokens=max_new, min_new_tokens=self.min_new_tokens, length_penalty=self.length_penalty)
        if self.mode == "sample":
            ngram = self.no_repeat_ngram_size
            return GenerationConfig(
                do_sample=True,
                temperature=float(self.temperature),
                top_k=self.top_k,
                top_p=float(self.top_p),
                no_repeat_ngram_size=CHATCELL_SAMPLING.no_repeat_ngram_size if ngram is None else ngram,
                **common,
            )
        return GenerationConfig(
            num_beams=self.num_beams if self.mode == "beam" else 1,
            num_return_sequences=self.num_return_sequences,
            early_stopping=self.early_stopping,
            no_repeat_ngram_size=self.no_repeat_ngram_size or 0,
            **common,
        )


def _early_stopping(text: str) -> bool | str:
    if text.lower() not in EARLY_STOPPING:
        raise InputError(f"{_name('early_stopping')} must be true, false or never, got {text!r}")
    return EARLY_STOPPING[text.lower()]


def chat_decoding(options: Mapping[str, Any]) -> DecodingOptions:
    """The decoding options of a chat question or web request: ChatCell's sampling unless they say otherwise."""
    return DecodingOptions.from_mapping(options, mode="sample")
