"""Shared fixtures: example bundles built once per session, fresh copies to damage, the CLI.

Every process that imports TensorFlow pays seconds, so bundles are built once, in this process,
and tests that need to change one work on a copy. Subprocesses are kept for what only a
subprocess can show: the command line, other component versions on PYTHONPATH, killed builds.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest

from bundler import Bundle

from .hostile_registry import HostileRegistry

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "example_bundles"
EXAMPLE_NAMES = sorted(p.name for p in EXAMPLES.iterdir() if (p / "manifest.yaml").is_file())


def readme_section(title: str) -> str:
    """The text of the README's ``## title`` section."""
    readme = (ROOT / "README.md").read_text()
    return readme.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def console_commands(section: str) -> list[tuple[str, list[str]]]:
    """($ command, the output lines the README shows for it) in a section's console blocks."""
    commands: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", section, flags=re.DOTALL):
        for line in block.splitlines():
            if line.startswith("$ "):
                commands.append((line[2:], []))
            elif commands:
                commands[-1][1].append(line)
    return commands


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update({"TF_CPP_MIN_LOG_LEVEL": "3", "NO_COLOR": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    env.update(extra)
    return env


def service_env(example: str = "custom_layer", **extra: str) -> dict[str, str]:
    """The environment of a service that has the example's components installed (on its path)."""
    return cli_env(PYTHONPATH=str(EXAMPLES / example / "src"), **extra)


def run_bundle(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the real `bundle` command line in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "bundler", *args],
        cwd=cwd or ROOT,
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_python(
    code: str, *, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd or ROOT,
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Bundle]:
    """Every example bundle, built once for the session: name -> bundler.Bundle."""
    from bundler import build_bundle

    out = tmp_path_factory.mktemp("bundles")
    return {
        name: build_bundle(EXAMPLES / name / "manifest.yaml", out / name) for name in EXAMPLE_NAMES
    }


class CopyBundle(Protocol):
    """The ``copy_bundle`` fixture: ``copy_bundle(name)`` copies that example's session bundle."""

    def __call__(self, name: str = "custom_layer") -> Path: ...


@pytest.fixture()
def copy_bundle(built: dict[str, Bundle], tmp_path: Path) -> CopyBundle:
    """A private copy of a session bundle, safe to damage."""

    def make(name: str = "custom_layer") -> Path:
        target = tmp_path / f"{name}-copy"
        shutil.copytree(built[name].path, target)
        return target

    return make


# -- a real OCI registry ------------------------------------------------------------------------

INSTALL = "apt-get install docker-registry (CNCF Distribution); .ci/run installs it"


class Registry:
    """A docker-registry process on a free loopback port, storing under ``folder``."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("docker-registry")
        if binary is None:
            pytest.skip(f"no docker-registry binary: {INSTALL}")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.storage = folder / "storage"
        config = folder / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log: {level: error}\n"
            f"storage: {{filesystem: {{rootdirectory: {self.storage}}}}}\n"
            f"http: {{addr: 127.0.0.1:{self.port}}}\n"
        )
        self.process = subprocess.Popen(
            [binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    pytest.fail("docker-registry did not start")
                time.sleep(0.1)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def blob(self, digest: str) -> Path:
        hexdigest = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    running = Registry(tmp_path_factory.mktemp("registry"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileRegistry]:
    """A registry that sends what the test sets (``mode``, ``manifest``); one per module."""
    server = HostileRegistry()
    yield server
    server.closing.set()
    server.shutdown()
    server.server_close()


@pytest.fixture()
def private_registry(tmp_path: Path) -> Iterator[Registry]:
    """A registry of the test's own, to tamper with or to stop."""
    running = Registry(tmp_path)
    yield running
    if running.process.poll() is None:
        running.stop()
