"""The README's quick start and its service snippet run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from .conftest import EXAMPLES, cli_env, readme_section


def _block(section: str, language: str) -> str:
    found = re.findall(rf"```{language}\n(.*?)```", section, flags=re.DOTALL)
    assert len(found) == 1, f"expected one {language} block"
    return str(found[0])


def test_quick_start_and_service_snippet_run_as_written(tmp_path: Path) -> None:
    (tmp_path / "example_bundles").symlink_to(EXAMPLES)
    env = cli_env(PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    steps = [
        line.split("#", 1)[0].strip()
        for line in _block(readme_section("A bundle, and what it is for"), "sh").splitlines()
    ]
    assert steps[0].startswith("pip install")  # the environment running this test has done it
    for step in steps[1:]:
        result = subprocess.run(
            ["bash", "-c", step], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, (step, result.stdout, result.stderr)
    snippet = _block(readme_section("A bundle, and what it is for"), "python")
    result = subprocess.run(
        [sys.executable, "-c", snippet],
        cwd=tmp_path,
        env=cli_env(PYTHONPATH=str(EXAMPLES / "custom_layer" / "src")),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    mode, digest, shape = result.stdout.split(maxsplit=2)
    assert (mode, shape.strip()) == ("keras", "(2, 1)")
    assert digest.startswith("sha256:")
