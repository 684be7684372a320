"""Progress on a terminal, silence when piped or with --json: real processes on a real pty."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

from bundler import Bundle

from .conftest import EXAMPLES, ROOT, cli_env


def run_on_terminal(*args: str, **extra: str) -> tuple[int, str, str]:
    """Run `bundle ARGS` with stderr on a pseudo-terminal; returns (exit, stdout, terminal text)."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "bundler", *args],
        cwd=ROOT,
        env=cli_env(**extra),
        stdout=subprocess.PIPE,
        stderr=terminal,
        text=True,
    )
    os.close(terminal)
    seen = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    stdout = process.stdout.read() if process.stdout else ""
    os.close(controller)
    return process.wait(timeout=120), stdout, seen.decode(errors="replace")


ALWAYS = {"BUNDLER_PROGRESS_MIN_BYTES": "0"}  # every bundle counts as big


def test_verify_shows_bytes_hashed_on_a_terminal_only(built: dict[str, Bundle]) -> None:
    root = str(built["sequential"].path)
    code, _, terminal = run_on_terminal("verify", root, **ALWAYS)
    assert code == 0 and "verifying: " in terminal and " / " in terminal and "/s)" in terminal
    code, stdout, terminal = run_on_terminal("verify", root, "--json", **ALWAYS)
    assert code == 0 and "verifying" not in terminal and stdout.startswith("{")
    code, _, terminal = run_on_terminal("verify", root)  # small bundle, default threshold
    assert code == 0 and "verifying" not in terminal
    piped = subprocess.run(
        [sys.executable, "-m", "bundler", "verify", root],
        env=cli_env(**ALWAYS),
        capture_output=True,
        text=True,
    )
    assert piped.returncode == 0 and "verifying" not in piped.stderr + piped.stdout


def test_build_shows_stages_and_bytes_hashed_on_a_terminal(tmp_path: Path) -> None:
    manifest = str(EXAMPLES / "sequential" / "manifest.yaml")
    code, stdout, terminal = run_on_terminal("build", manifest, "-o", str(tmp_path / "b"), **ALWAYS)
    assert code == 0, terminal
    for stage in (
        "importing TensorFlow",
        "exporting saved_model/",
        "hashing files",
        "hashing: ",
        "rehearsing the load in a fresh interpreter",
    ):
        assert stage in terminal, terminal
    assert stdout.startswith("built ")
