"""An installed wheel is complete: model presets, the bundled cells and the web page travel with it.

The wheel is built from this checkout and installed into a fresh virtual environment that sees only
the wheel and the test environment's dependencies (not the repository), then it prepares the bundled
cells and trains the `tiny` preset for a few steps from an unrelated working directory.
"""

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run(args: list[str], cwd: Path, timeout: float = 600) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing but the venv's own paths
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """Python of a fresh venv holding the wheel; dependencies come from this environment."""
    root = tmp_path_factory.mktemp("wheel")
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(root / "dist"),
            str(REPO),
        ],
        cwd=root,
    )
    wheel = next((root / "dist").glob("chatcell_jax-*.whl"))
    venv = root / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=root)
    python = venv / "bin" / "python"
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=root).strip())
    run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
        cwd=root,
    )
    # the dependencies, as a plain path entry: its .pth files (our editable install) are not run
    (site / "test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def test_wheel_holds_the_package_data(installed):
    wheel = next((installed.parents[2] / "dist").glob("*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for wanted in (
        "chatcell_jax/model/presets/tiny.yaml",
        "chatcell_jax/model/presets/t5-base.yaml",
        "chatcell_jax/demo_data/pbmc68k_counts.h5ad",
        "chatcell_jax/serve/web/index.html",
    ):
        assert wanted in names


def test_installed_wheel_trains_tiny_from_another_directory(installed, tmp_path):
    where = run([str(installed), "-c", "import chatcell_jax; print(chatcell_jax.__file__)"], cwd=tmp_path)
    assert str(installed.parents[1]) in where and str(REPO) not in where  # the wheel, not the checkout
    chatcell = [str(installed), "-m", "chatcell_jax.cli"]
    run([*chatcell, "prepare", "--demo", "--top-k", "20", "--out", "data", "--no-progress"], cwd=tmp_path)
    run([*chatcell, "tokenizer", "--data", "data", "--out", "tok"], cwd=tmp_path)
    sets = [
        "model=tiny",
        "data=data",
        "tokenizer=tok",
        "out=run",
        "steps=2",
        "batch_size=8",
        "eval_every=0",
        "checkpoint_every=0",
        "max_source_length=64",
        "max_target_length=32",
        "tensorboard=false",
    ]
    run([*chatcell, "train", "--no-progress", *[a for s in sets for a in ("--set", s)]], cwd=tmp_path)
    assert (tmp_path / "run" / "model" / "params.safetensors").is_file()
