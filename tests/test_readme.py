"""The README's quick start, its service snippet and its guides run as written."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from .conftest import EXAMPLES, cli_env, console_commands, readme_section, run_bundle


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


# -- the guides: every console block runs, and prints what the README shows ---------------------


def _stable(line: str) -> str:
    """A line without what changes from build to build: hashes, sizes, timings."""
    line = re.sub(r"\b[0-9a-f]{12,64}\b", "<hex>", line)
    return re.sub(r"\d+\.\d+ (KB|s)\b", r"<n> \1", line)


def _run_console(
    commands: list[tuple[str, list[str]]], cwd: Path, env: dict[str, str], digest: str
) -> None:
    """Run a section's console commands in order, as bash would, comparing stdout and stderr
    (the README shows both, as a terminal does) with what it shows. A command that fails must be
    followed by `echo $?`, which must print its exit code. Full digests in a command are replaced
    by ``digest``, the bundle this test built.

    The README's text was captured by running the same commands in a folder prepared as
    ``_guide_folder`` prepares one (a built, signed bundles/custom-layer and publisher keys) with
    this checkout's `bundle` on PATH and NO_COLOR=1; a mismatch prints the new output."""
    previous: int | None = None
    for index, (command, shown) in enumerate(commands):
        if command == "echo $?":
            assert shown == [str(previous)], (commands[index - 1][0], previous)
            continue
        result = subprocess.run(
            ["bash", "-c", re.sub(r"sha256:[0-9a-f]{64}", digest, command.split("  # ", 1)[0])],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=300,
        )
        previous = result.returncode
        checked = index + 1 < len(commands) and commands[index + 1][0] == "echo $?"
        assert checked or result.returncode == 0, (command, result.stdout)
        printed = [_stable(line) for line in result.stdout.splitlines()]
        # on a change of output, the message is the new text to paste into the README
        assert printed == [_stable(line) for line in shown], f"$ {command}\n{result.stdout}"


def _guide_folder(built: dict[str, Any], tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A folder holding bundles/custom-layer (signed with publisher.pem) and example_bundles,
    and the environment of a shell there: this interpreter's `bundle` first on PATH."""
    from bundler.signing import keygen, sign_bundle

    (tmp_path / "example_bundles").symlink_to(EXAMPLES)
    bundle = tmp_path / "bundles" / "custom-layer"
    shutil.copytree(built["custom_layer"].path, bundle)
    private, _ = keygen(tmp_path / "publisher")
    sign_bundle(bundle, private)
    env = cli_env(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("PYTHONPATH", None)
    return bundle, env


def test_the_deploy_gate_guide_prints_what_it_shows(built: dict[str, Any], tmp_path: Path) -> None:
    commands = console_commands(readme_section("A deploy gate in CI"))
    verifies = [command for command, _ in commands if "bundle verify" in command]
    assert len(verifies) == 7, verifies
    for flag in ("--env", "--key", "--digest", "--json", "--smoke"):
        assert any(flag in command for command in verifies), flag
    _, env = _guide_folder(built, tmp_path)
    _run_console(commands, tmp_path, env, built["custom_layer"].digest)
    verdict = json.loads((tmp_path / "verdict.json").read_text())  # the widened lock's
    assert (verdict["ok"], verdict["signature"]) == (False, "invalid")
    # the digest covers the lock's fields too: the edit is caught even without a key
    assert [problem["kind"] for problem in verdict["problems"]] == ["signature", "digest"]


def test_the_ci_yaml_runs_only_what_the_gate_guide_runs() -> None:
    """The workflow's `run:` lines are the guide's commands: the ones its console blocks execute
    (without the PYTHONPATH that stands in for the serving image's install) and its install."""
    section = readme_section("A deploy gate in CI")
    executed = {
        re.sub(r"^PYTHONPATH=\S+ ", "", command.split("  # ", 1)[0]).strip()
        for command, _ in console_commands(section)
    }
    executed |= {line.split("#", 1)[0].strip() for line in _block(section, "sh").splitlines()}
    runs = [
        line.split("run: ", 1)[1].split(" #", 1)[0].strip()
        for line in _block(section, "yaml").splitlines()
        if "- run: " in line
    ]
    assert len(runs) == 4, runs
    # the gate job runs `python -m bundler` (Ruby's `bundle` is on GitHub's runners): the same
    runs = [re.sub(r"^python -m bundler ", "bundle ", run) for run in runs]
    assert [run for run in runs if run not in executed] == []


def test_the_signing_guide_prints_what_it_shows(built: dict[str, Any], tmp_path: Path) -> None:
    from bundler.signing import key_id

    commands = console_commands(readme_section("Signing"))
    bundle, env = _guide_folder(built, tmp_path)
    (bundle / "bundle.sig.json").unlink()  # the guide signs it
    for name in ("publisher.pem", "publisher.pub.pem"):
        (tmp_path / name).unlink()  # and makes the keys
    env["PYTHONPATH"] = str(EXAMPLES / "custom_layer" / "src")  # the component, installed
    _run_console(commands, tmp_path, env, built["custom_layer"].digest)
    # what `bundle sign` prints is the key id, not the bundle digest
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    public = load_pem_public_key((tmp_path / "publisher.pub.pem").read_bytes())
    signed = run_bundle("sign", str(bundle), "--key", str(tmp_path / "publisher.pem"))
    assert signed.stdout.strip().endswith(f": {key_id(public)}"), signed.stdout
    assert key_id(public) != built["custom_layer"].digest
