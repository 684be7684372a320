"""The `bundle` command line, as a user runs it: real subprocesses, real files."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bundler import Bundle, verify_bundle
from bundler.schema import SCHEMA_NAMES, checked_in

from ..conftest import (
    EXAMPLES,
    ROOT,
    cli_env,
    run_bundle,
    service_env,
)


def test_build_verify_inspect_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "regressor"
    built = run_bundle(
        "build", str(EXAMPLES / "custom_layer" / "manifest.yaml"), "-o", str(out), "--json"
    )
    assert built.returncode == 0, built.stderr
    document = json.loads(built.stdout)
    assert document["name"] == "custom-layer-regressor" and document["digest"].startswith("sha256:")
    # the keys docs/cli.md promises: Bundle.to_json() and the time the command took
    assert set(document) == {
        "bundle",
        "name",
        "version",
        "digest",
        "files",
        "bytes",
        "seconds",
        "notes",
        "rehearsal",
    }
    rehearsal = document["rehearsal"]  # the build loaded it in a fresh interpreter, and says so
    assert rehearsal["rehearsed"] is True and rehearsal["examples"] == 1
    assert 0 < rehearsal["waited"] <= rehearsal["seconds"]

    # a service has the component installed; here its source folder stands in for that
    service = service_env()
    verified = run_bundle("verify", str(out), env=service)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith("OK")
    assert document["digest"] in verified.stdout
    assert "acme_layers.layers" in verified.stdout  # the load plan table

    inspected = run_bundle("inspect", str(out), env=service)
    assert inspected.returncode == 0, inspected.stderr
    for words in (
        "custom-layer-regressor 0.3.0",
        document["digest"],
        "acme>Scale",
        "model.keras",
        "saved_model/saved_model.pb",
        "1.2.0",
    ):
        assert words in inspected.stdout

    as_json = json.loads(run_bundle("inspect", str(out), "--json").stdout)
    assert as_json["components"][0]["module"] == "acme_layers.layers"
    assert "model.keras" in as_json["files"]


def test_verify_predicts_refusal_when_the_component_is_not_installed(
    built: dict[str, Bundle],
) -> None:
    result = run_bundle("verify", str(built["custom_layer"].path))
    assert result.returncode == 1
    assert "REFUSES to load" in result.stdout
    assert "acme_layers.layers" in result.stdout and "missing" in result.stdout
    assert (
        "to load it: make acme_layers.layers >=1.2.0 <2.0.0 importable (code on the path: not "
        "from pip)" in result.stdout
    )
    fallback = run_bundle("verify", str(built["custom_layer"].path), "--policy", "fallback")
    assert fallback.returncode == 0, fallback.stdout
    assert "serves the SavedModel graph" in fallback.stdout


def test_build_default_output_is_bundles_name_version(tmp_path: Path) -> None:
    manifest = str(EXAMPLES / "sequential" / "manifest.yaml")
    result = run_bundle("build", manifest, "--no-rehearse", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert verify_bundle(tmp_path / "bundles" / "sequential-classifier-1.0.0").ok
    again = run_bundle("build", manifest, "--no-rehearse", cwd=tmp_path)
    assert again.returncode == 2 and "--force" in again.stderr


def test_inspect_shows_metadata(built: dict[str, Bundle]) -> None:
    result = run_bundle("inspect", str(built["with_metadata"].path))
    assert result.returncode == 0, result.stderr
    for words in ("two-moons", "learning_rate", "accuracy", "ml-platform@example.com", "smoke"):
        assert words in result.stdout


def test_inspect_json_is_the_report_inspect_bundle_returns(built: dict[str, Bundle]) -> None:
    from bundler import InspectReport, inspect_bundle

    root = built["with_metadata"].path
    report = inspect_bundle(root)
    assert isinstance(report, InspectReport) and report.lock.digest == built["with_metadata"].digest
    assert report.problems == () and report.plan.policy == "adapt"
    result = run_bundle("inspect", str(root), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == json.loads(json.dumps(report.to_json()))


@pytest.mark.parametrize("which", SCHEMA_NAMES)
def test_schema_prints_the_checked_in_schema(which: str) -> None:
    result = run_bundle("schema", which)
    assert result.returncode == 0
    assert json.loads(result.stdout) == json.loads(checked_in(which))


def test_version_and_help() -> None:
    version = run_bundle("--version")
    assert version.returncode == 0 and version.stdout.startswith("bundle ")
    helped = run_bundle("--help")
    assert helped.returncode == 0
    for verb in ("build", "verify", "inspect", "schema", "env"):
        assert verb in helped.stdout
    assert "exit codes" in helped.stdout
    verify_help = run_bundle("verify", "--help")
    assert "--policy" in verify_help.stdout and "--env" in verify_help.stdout


def test_unknown_option_exits_2() -> None:
    result = run_bundle("verify", "--frobnicate")
    assert result.returncode == 2


def test_env_prints_name_version_lines() -> None:
    result = run_bundle("env")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert any(line.lower().startswith("tensorflow==") for line in lines)
    assert all("==" in line for line in lines)


def test_build_killed_at_any_moment_leaves_nothing_or_a_complete_bundle(tmp_path: Path) -> None:
    """SIGKILL a real build at moments spread over its run; OUT is absent or verifies."""
    manifest = str(EXAMPLES / "custom_layer" / "manifest.yaml")
    started = time.perf_counter()
    probe = run_bundle("build", manifest, "-o", str(tmp_path / "probe"))
    assert probe.returncode == 0, probe.stderr
    duration = time.perf_counter() - started
    outcomes = []
    for fraction in (0.3, 0.6, 0.8, 0.9, 0.97):
        out = tmp_path / f"killed-{fraction}"
        process = subprocess.Popen(
            [sys.executable, "-m", "bundler", "build", manifest, "-o", str(out)],
            cwd=ROOT,
            env=cli_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(duration * fraction)
        process.send_signal(signal.SIGKILL)
        process.wait()
        if out.exists():
            assert verify_bundle(out).ok
            outcomes.append("complete")
        else:
            outcomes.append("absent")
        # the next build of the same OUT cleans what the killed one left
        rebuilt = run_bundle("build", manifest, "-o", str(out), "--force", "--no-rehearse")
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert not [p for p in tmp_path.iterdir() if ".bundler-" in p.name]
    assert "absent" in outcomes  # the kill points really did interrupt builds


# A factory that says it runs (the build's temporary folder exists by then) and waits for a file
# the test never writes: the signal always lands mid-build, however loaded the machine is.
_WAITING_FACTORY = """
import time
from pathlib import Path


def build(started: str, release: str):
    Path(started).write_text("factory running")
    deadline = time.monotonic() + 300
    while not Path(release).exists():
        if time.monotonic() > deadline:
            raise RuntimeError("nobody released the factory")
        time.sleep(0.02)
    import keras

    return keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
"""


def test_sigterm_removes_the_temporary_folder(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "waiting_factory.py").write_text(_WAITING_FACTORY)
    started, release = tmp_path / "started", tmp_path / "release"
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(
        "apiVersion: bundler/v1\nname: waiting\nversion: 1.0.0\n"
        "model:\n  factory: waiting_factory:build\n"
        f"  args: {{started: {json.dumps(str(started))}, release: {json.dumps(str(release))}}}\n"
        "paths: [src]\nexamples: []\n"
    )
    out = tmp_path / "out" / "b"
    process = subprocess.Popen(
        [sys.executable, "-m", "bundler", "build", str(manifest), "-o", str(out)],
        cwd=ROOT,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not started.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists(), process.communicate(timeout=60)[1]
        temporaries = [p for p in out.parent.iterdir() if ".bundler-tmp" in p.name]
        assert len(temporaries) == 1  # the folder the signal must clean up is there
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        release.write_text("")  # never needed when the test passes; frees a stuck build
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if ".bundler-" in p.name]
    assert "Traceback" not in stderr


def test_every_command_explains_itself_in_its_help() -> None:
    from bundler.cli.parser import make_parser

    parser = make_parser()
    commands = next(
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    )
    for name, command in commands.choices.items():
        assert command.description and len(command.description) > 80, name


@pytest.mark.parametrize(
    "argv",
    [["--debug", "verify", "no-such-bundle"], ["verify", "no-such-bundle", "--debug"]],
    ids=["before-the-command", "after-the-command"],
)
def test_debug_shows_the_traceback_wherever_it_is_given(argv: list[str]) -> None:
    result = run_bundle(*argv)
    assert result.returncode == 2
    assert "Traceback (most recent call last)" in result.stderr


def test_without_debug_a_user_mistake_is_one_line() -> None:
    result = run_bundle("verify", "no-such-bundle")
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
