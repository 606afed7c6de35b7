"""`chatcell web`: a local chat page and a JSON API in front of a model.

The app only validates requests and calls an engine; the engine (see `chatcell_jax.serve.chat`) owns the
model. Requests are checked against `Limits` before any model work, so bad input is a 4xx and never
reaches JAX. The model is called under a lock: one decode at a time keeps memory bounded and
compiled shapes reused, while the server keeps accepting requests (they queue on the lock).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from importlib import resources
from typing import Literal, Protocol

from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from chatcell_jax.errors import InputError
from chatcell_jax.serve.options import chat_decoding
from chatcell_jax.serve.pseudocells import DEFAULT_CANDIDATES, check_candidates

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    max_prompt_chars: int = 4000
    max_batch: int = 16
    max_new_tokens: int = 256
    max_beams: int = 8


class Engine(Protocol):
    def answer(self, prompts: list[str], options: dict) -> list[dict]: ...

    def examples(self) -> dict: ...


class GenerateRequest(BaseModel):
    """The body of POST /api/generate. Unknown fields are rejected, so a typo is never ignored.

    Answers to generation questions are gene-constrained (see `chatcell_jax.serve.chat`); `free: true`
    decodes them as free text with the same settings. A pseudo-cell answer is the best of
    `candidates` samples by the model's own annotation (1: plain constrained sampling)."""

    # strict: "2" or true is not a number of beams. Ranges are checked by DecodingOptions, the one
    # place that checks decoding settings for the CLI, chat and this API.
    model_config = ConfigDict(extra="forbid", strict=True)

    prompts: list[str] = Field(min_length=1)
    mode: Literal["beam", "greedy", "sample"] = "sample"
    num_beams: int = 4
    max_new_tokens: int | None = None
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 0.95
    seed: int = 0
    # Generation questions: exactly N distinct genes of the model's vocabulary unless free is true.
    free: bool = False
    candidates: int = DEFAULT_CANDIDATES

    @field_validator("candidates", mode="before")
    @classmethod
    def _candidates(cls, value: object) -> int:
        return check_candidates(value)  # its message names the range and the fix, in the 422

    @field_validator("prompts")
    @classmethod
    def _not_blank(cls, prompts: list[str]) -> list[str]:
        if any(not p.strip() for p in prompts):
            raise ValueError("prompts must not be empty strings")
        return prompts


def create_app(engine: Engine, limits: Limits = Limits()) -> FastAPI:
    app = FastAPI(title="chatcell-jax", docs_url=None, redoc_url=None)
    lock = threading.Lock()
    page = (resources.files("chatcell_jax.serve.web") / "index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/api/examples")
    def examples() -> dict:
        return engine.examples()

    @app.post("/api/generate")
    def generate(request: GenerateRequest) -> dict:
        options = request.model_dump(exclude={"prompts"})
        try:
            chat_decoding(options)  # bad settings are a 422 before the lock and before JAX
        except InputError as err:
            raise HTTPException(status_code=422, detail=str(err)) from None
        _check_limits(request, limits)
        try:
            with lock:
                results = engine.answer(request.prompts, options)
        except InputError as err:
            raise HTTPException(status_code=422, detail=str(err)) from None
        return {"results": results}

    return app


def _check_limits(request: GenerateRequest, limits: Limits) -> None:
    if len(request.prompts) > limits.max_batch:
        raise HTTPException(413, f"at most {limits.max_batch} prompts per request (got {len(request.prompts)})")
    longest = max(len(p) for p in request.prompts)
    if longest > limits.max_prompt_chars:
        raise HTTPException(413, f"a prompt has {longest} characters; the limit is {limits.max_prompt_chars}")
    if request.max_new_tokens is not None and request.max_new_tokens > limits.max_new_tokens:
        raise HTTPException(422, f"max_new_tokens is at most {limits.max_new_tokens}")
    if request.num_beams > limits.max_beams:
        raise HTTPException(422, f"num_beams is at most {limits.max_beams}")
