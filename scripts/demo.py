"""The main job on the bundled real data, stage by stage, through the same commands a user runs.

`make demo` calls this. Each stage prints the command it runs; outputs go under --out and a second
run replaces them cleanly (every stage writes atomically with --overwrite).
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from chatcell_jax.cli import main as chatcell


def stage(title: str, argv: list[str]) -> None:
    print(f"\n=== {title}\n$ chatcell {shlex.join(argv)}", flush=True)
    started = time.perf_counter()
    code = chatcell(argv)
    if code != 0:
        sys.exit(f"stage '{title}' failed with exit code {code}")
    print(f"--- {title}: {time.perf_counter() - started:.1f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo_out"))
    parser.add_argument("--steps", type=int, default=300, help="training steps (DEMO_STEPS)")
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    stage("Step 1: cell sentences and instructions (bundled PBMC cells)",
          ["prepare", "--demo", "--out", str(out / "data"), "--overwrite"])
    print(f"\nDone in {time.perf_counter() - started:.0f} s. Outputs:")
    print(f"  {out / 'data'}: train/valid/test.jsonl and manifest.json")


if __name__ == "__main__":
    main()
