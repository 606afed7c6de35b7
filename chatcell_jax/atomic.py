"""Outputs that appear whole or not at all, and the check every command makes before its work.

Every command writes into a temporary sibling of its target and renames it into place only when
everything succeeded, so an interrupted or failed run never leaves a directory or file that looks
complete. An existing target is swapped out and then removed. `check_output` is called before any
compute, so a bad `--out` fails in a second, not after an hour of generation.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from chatcell_jax.errors import InputError


def check_output(
    target: str | Path, *, overwrite: bool, inputs: tuple[str | Path | None, ...] = (), kind="file"
) -> None:
    """InputError unless `target` can be written: not one of `inputs`, not an existing output
    without `overwrite`, of the right kind (file or directory), and inside a directory this process
    can create files in (its nearest existing ancestor is probed with a temporary file, which also
    works where permission bits say nothing, as for root). Nothing is left behind."""
    target = Path(target)
    for source in inputs:
        if source is not None and Path(source).resolve() == target.resolve():
            raise InputError(f"--out {target} is also an input; the input is never overwritten, choose another --out")
    if target.exists():
        if kind == "file" and target.is_dir():
            raise InputError(f"--out {target} is a directory; give a file name")
        if kind == "directory" and not target.is_dir():
            raise InputError(f"--out {target} is a file; give a directory name")
        if not overwrite:
            raise InputError(f"{target} already exists; pass --overwrite to replace it")
    ancestor = target.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"--out {target}: {ancestor} is a file, so the output's folder cannot be made there")
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as err:
        raise InputError(f"--out {target}: cannot write in {ancestor} ({err.strerror}); choose another --out") from None


def _make_parent(target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create {target.parent} ({err.strerror}); choose another --out") from None


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
    _make_parent(target)
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
    _make_parent(target)
    tmp = target.parent / f".{target.stem}.partial-{os.getpid()}{target.suffix}"
    try:
        yield tmp
        tmp.replace(target)
    finally:
        if tmp.exists():
            tmp.unlink()
