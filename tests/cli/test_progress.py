"""Progress on a terminal, silence when piped or with --json: real processes on a real pty."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bundler import Bundle

from ..conftest import EXAMPLES, ROOT, Registry, cli_env, run_bundle


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


def _lines(terminal: str) -> list[str]:
    """What a terminal shows, line by line: each rewrite of a line (``\\r``) counts as one."""
    return [line for line in re.split(r"\r\n|\r|\n", terminal) if line.strip()]


def _bytes_line(lines: list[str], stage: str) -> bool:
    return any(
        re.fullmatch(
            rf"  {stage}: [\d.]+ [KMG]?B / [\d.]+ [KMG]?B \([\d.]+ [KMG]?B/s\)", line.rstrip()
        )
        for line in lines
    )


def test_push_and_pull_show_their_stages_on_a_terminal(
    built: dict[str, Bundle], registry: Registry, tmp_path: Path
) -> None:
    reference = f"oci://{registry.host}/ml/progress:1"
    code, stdout, terminal = run_on_terminal(
        "push", str(built["sequential"].path), reference, **ALWAYS
    )
    assert code == 0 and stdout.startswith("pushed "), terminal
    lines = _lines(terminal)
    assert [line for line in lines if line.endswith("...")] == ["  verifying...", "  uploading..."]
    assert _bytes_line(lines, "verifying") and _bytes_line(lines, "uploading"), lines
    cache = str(tmp_path / "cache")
    code, stdout, terminal = run_on_terminal(
        "pull", reference, "-o", str(tmp_path / "pulled"), BUNDLER_CACHE=cache, **ALWAYS
    )
    assert code == 0 and stdout.startswith("pulled "), terminal
    lines = _lines(terminal)
    stages = [line for line in lines if line.endswith("...")]
    assert stages == ["  downloading...", "  verifying in the cache..."]
    assert _bytes_line(lines, "downloading") and _bytes_line(lines, "verifying in the cache")


def test_push_and_pull_show_nothing_but_the_result_when_not_on_a_terminal_or_with_json(
    built: dict[str, Bundle], registry: Registry, tmp_path: Path
) -> None:
    reference = f"oci://{registry.host}/ml/quiet:1"
    env = cli_env(BUNDLER_CACHE=str(tmp_path / "cache"), **ALWAYS)
    for args in (["push", str(built["sequential"].path), reference], ["pull", reference]):
        piped = run_bundle(*args, env=env)
        assert piped.returncode == 0 and piped.stderr == "", piped.stderr
        code, stdout, terminal = run_on_terminal(
            *args, "--json", **ALWAYS, BUNDLER_CACHE=str(tmp_path / "cache2")
        )
        assert code == 0 and stdout.startswith("{") and terminal == "", terminal


def test_push_and_pull_count_every_byte_of_every_stage_chunk_by_chunk(
    built: dict[str, Bundle], registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the meters are told adds up to what each stage announced, also when blobs go up in
    chunks (lowered here from 32 MiB, so the example's files are big)."""
    import bundler.registry.client
    from bundler.registry.api import pull, push

    monkeypatch.setattr(bundler.registry.client, "CHUNKED_ABOVE", 4096)
    monkeypatch.setattr(bundler.registry.client, "CHUNK_BYTES", 4096)
    monkeypatch.setenv("BUNDLER_CACHE", str(tmp_path / "cache"))
    stages: list[tuple[str, int, list[int]]] = []

    def on_stage(what: str, total: int) -> Callable[[int], None]:
        counted: list[int] = []
        stages.append((what, total, counted))
        return counted.append

    bundle = built["sequential"]
    pushed = push(bundle.path, f"oci://{registry.host}/ml/counted:1", on_stage=on_stage)
    pull(pushed.reference, on_stage=on_stage)
    assert [(what, sum(counted)) for what, _, counted in stages] == [
        (what, total) for what, total, _ in stages
    ]
    assert [what for what, _, _ in stages] == [
        "verifying", "uploading", "downloading", "verifying in the cache",
    ]  # fmt: skip
    (model_keras,) = [e.size for name, e in bundle.lock.files.items() if name == "model.keras"]
    uploads = stages[1][2]
    assert uploads.count(4096) >= model_keras // 4096, "the big file went up in counted chunks"
