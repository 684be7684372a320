"""The light install: ``pip install keras-bundler`` without the ``tensorflow`` extra.

A deploy gate only needs to verify, inspect, sign and describe environments; none of these import
TensorFlow, so none should make the gate download it. This installs the wheel (the one .ci/run
built, else one built for the session) into a fresh virtual environment (pip's cache keeps it to
seconds), proves that TensorFlow and Keras are absent there, and runs the commands on a bundle
built by the session.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bundler import Bundle

from .conftest import ROOT, Dist, cli_env, run_bundle

NOT_INSTALLED = (
    "bundle: error: building a bundle needs tensorflow and keras, which are not installed here: "
    "pip install 'keras-bundler[tensorflow]'"
)
NOT_INSTALLED_FOR_SMOKE = (
    "bundle: error: replaying the golden examples needs tensorflow and keras, which are not "
    "installed here: pip install 'keras-bundler[tensorflow]'"
)


@pytest.fixture(scope="module")
def light(tmp_path_factory: pytest.TempPathFactory, dist: Dist) -> Path:
    """The ``bin`` folder of a fresh virtual environment holding the light install."""
    venv = tmp_path_factory.mktemp("light") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(dist.wheel)],
        env=_light_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stderr
    return venv / "bin"


def _light_env() -> dict[str, str]:
    env = cli_env()
    for name in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):
        env.pop(name, None)
    return env


def _run(light: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(light / "bundle"), *args],
        cwd=cwd,
        env=_light_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_light_install_has_no_tensorflow(light: Path) -> None:
    found = subprocess.run(
        [
            str(light / "python"),
            "-c",
            "import importlib.util as u; print([n for n in ('tensorflow', 'keras', 'bundler', "
            "'h5py') if u.find_spec(n)])",
        ],
        cwd=light,  # not the checkout, whose bundler/ would shadow the installed one
        env=_light_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert found.stdout.strip() == "['bundler', 'h5py']", found.stderr


def test_verify_inspect_env_sign_work_without_tensorflow(
    light: Path, built: dict[str, Bundle], tmp_path: Path
) -> None:
    bundle = tmp_path / "moons"
    shutil.copytree(built["with_metadata"].path, bundle)
    # the deploy target's environment, written where TensorFlow is installed
    target = tmp_path / "target.txt"
    described = run_bundle("env", "--bundle", str(bundle))
    assert described.returncode == 0, described.stderr
    target.write_text(described.stdout)

    verified = _run(light, "verify", "moons", "--env", "target.txt", cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith(
        f"OK  moons  moons-classifier 2.1.0  {built['with_metadata'].digest}"
    )
    # here, without the frameworks, the plan is honest: this machine cannot load it
    here = _run(light, "verify", "moons", cwd=tmp_path)
    assert here.returncode == 1
    assert "why: keras (missing): not installed; tensorflow (missing): not installed" in here.stdout

    inspected = _run(light, "inspect", "moons", cwd=tmp_path)
    assert inspected.returncode == 0, inspected.stderr
    assert inspected.stdout.startswith("moons-classifier 2.1.0 - ")

    env = _run(light, "env", cwd=tmp_path)
    assert env.returncode == 0, env.stderr
    names = {line.split("==")[0] for line in env.stdout.splitlines() if "==" in line}
    assert "keras-bundler" in names and not names & {"tensorflow", "keras"}

    assert _run(light, "keygen", "-o", "publisher", cwd=tmp_path).returncode == 0
    signed = _run(light, "sign", "moons", "--key", "publisher.pem", cwd=tmp_path)
    assert signed.returncode == 0, signed.stderr
    trusted = _run(
        light, "verify", "moons", "--env", "target.txt", "--key", "publisher.pub.pem", cwd=tmp_path
    )
    assert trusted.returncode == 0, trusted.stdout + trusted.stderr

    smoke = _run(light, "verify", "moons", "--env", "target.txt", "--smoke", cwd=tmp_path)
    assert (smoke.returncode, smoke.stderr.splitlines()) == (2, [NOT_INSTALLED_FOR_SMOKE])

    schema = _run(light, "schema", "lock", cwd=tmp_path)
    assert schema.returncode == 0 and schema.stdout.startswith("{"), schema.stderr


def test_build_without_tensorflow_names_the_extra(light: Path, tmp_path: Path) -> None:
    manifest = ROOT / "example_bundles" / "sequential" / "manifest.yaml"
    result = _run(light, "build", str(manifest), "-o", "out", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [NOT_INSTALLED]
    assert not (tmp_path / "out").exists()


def test_load_bundle_without_tensorflow_names_the_extra(
    light: Path, built: dict[str, Bundle], tmp_path: Path
) -> None:
    code = (
        "import bundler\n"
        "try:\n"
        f"    bundler.load_bundle({str(built['sequential'].path)!r})\n"
        "except bundler.MissingDependencyError as error:\n"
        "    print(error.exit_code, error)\n"
    )
    result = subprocess.run(
        [str(light / "python"), "-c", code],
        cwd=tmp_path,
        env=_light_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.splitlines() == [
        "2 loading a bundle needs tensorflow and keras, which are not installed here: "
        "pip install 'keras-bundler[tensorflow]'"
    ], result.stderr
