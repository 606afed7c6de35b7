"""Outputs that appear whole or not at all.

Every command writes into a temporary sibling of its target and renames it into place only when
everything succeeded, so an interrupted or failed run never leaves a directory or file that looks
complete. An existing target is swapped out and then removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from chatcell_jax.errors import InputError


@contextlib.contextmanager
def atomic_dir(target: str | Path, *, overwrite: bool = True, marker: str | None = None) -> Iterator[Path]:
    """Yield a fresh temporary directory beside `target`; on success it becomes `target`.

    An existing `target` is an error unless `overwrite`; with `marker`, it is replaced only when it
    is empty or holds that file (it is one of our outputs, not a user's directory)."""
    target = Path(target)
    if target.exists():
        if not overwrite:
            raise InputError(f"{target} already exists; pass --overwrite to replace it")
        foreign = not target.is_dir() or (
            marker is not None and any(target.iterdir()) and not (target / marker).exists()
        )
        if foreign:
            raise InputError(
                f"{target} exists and is not a previous output (no {marker}); choose another --out or remove it"
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        yield tmp
        old = None
        if target.exists():
            old = target.parent / f"{tmp.name}.old"
            target.rename(old)
        tmp.rename(target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(target: str | Path) -> Iterator[Path]:
    """A temporary path next to `target` (same suffix), renamed onto it only if the block succeeds."""
    target = Path(target)
    if target.is_dir():
        raise InputError(f"{target} is a directory; give a file name")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.stem}.partial-{os.getpid()}{target.suffix}"
    try:
        yield tmp
        tmp.replace(target)
    finally:
        if tmp.exists():
            tmp.unlink()
