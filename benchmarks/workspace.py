"""The benchmark model's workspace: a manifest and its component module, as a user lays them out.

Every benchmark builds bundles of the same model (``models.py``, with a custom layer) at the size
it measures; this writes the folder they are built from, so that every row builds the same thing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent


def write_workspace(folder: Path, params: int, seed: int = 0) -> Path:
    """A manifest and its component module (the benchmark model, with a custom layer)."""
    (folder / "src").mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "models.py", folder / "src" / "bench_layers.py")
    manifest = folder / "manifest.yaml"
    manifest.write_text(
        "apiVersion: bundler/v1\n"
        f"name: bench-{params}\n"
        "version: 1.0.0\n"
        "model:\n"
        "  factory: bench_layers:build\n"
        f"  args: {{params: {params}, seed: {seed}}}\n"
        "components:\n"
        "  - module: bench_layers\n"
        '    version: "1.0.0"\n'
        "paths: [src]\n"
    )
    return manifest
