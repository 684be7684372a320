"""A build tells the user's mistakes before TensorFlow loads: OUT, paths, weights, modules.

Importing TensorFlow takes seconds; these mistakes must not wait for it. The proof is a
``tensorflow`` (and ``keras``) on the path that fails as soon as it is imported: each mistake
below is still reported, in its own words, so nothing imported TensorFlow first.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from bundler import build_bundle
from bundler.errors import ComponentError

from ..conftest import EXAMPLES, cli_env, run_bundle

POISON = "import raises: the build imported {name} before checking its inputs"


@pytest.fixture()
def poisoned(tmp_path: Path) -> dict[str, str]:
    """The CLI's environment with a tensorflow and a keras that fail when imported."""
    for name in ("tensorflow", "keras"):
        package = tmp_path / "poison" / name
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(
            f"raise ImportError({POISON.format(name=name)!r})\n", encoding="utf-8"
        )
    return cli_env(PYTHONPATH=str(tmp_path / "poison"))


def _project(tmp_path: Path, **changes: object) -> Path:
    """A copy of example_bundles/custom_layer with ``changes`` made to its manifest."""
    folder = tmp_path / "project"
    shutil.copytree(EXAMPLES / "custom_layer", folder)
    manifest = folder / "manifest.yaml"
    document = yaml.safe_load(manifest.read_text())
    for key, value in changes.items():
        if key == "factory":
            document["model"]["factory"] = value
        elif key == "weights":
            document["model"]["weights"] = value
        else:
            document[key] = value
    manifest.write_text(yaml.safe_dump(document))
    return manifest


MISTAKES = [
    pytest.param(
        {"paths": ["src", "vendored"]},
        "{manifest}: paths[1]: folder 'vendored' does not exist",
        id="paths-folder-missing",
    ),
    pytest.param(
        {"weights": "weights/final.weights.h5"},
        "{manifest}: model.weights: weights file does not exist",
        id="weights-file-missing",
    ),
    pytest.param(
        {"factory": "acme_modles.regressor:build"},
        "{manifest}: model.factory: cannot import 'acme_modles.regressor': no module named "
        "'acme_modles' (add its folder to 'paths', or install it)",
        id="factory-package-mistyped",
    ),
    pytest.param(
        {"factory": "acme_models.regresor:build"},
        "{manifest}: model.factory: cannot import 'acme_models.regresor': no module named "
        "'acme_models.regresor' (add its folder to 'paths', or install it)",
        id="factory-module-mistyped",
    ),
    pytest.param(
        {"components": [{"module": "acme_layers.layer", "version": "1.2.0"}]},
        "{manifest}: components[0].module: cannot import component 'acme_layers.layer': no "
        "module named 'acme_layers.layer' (is it installed, or listed under 'paths'?)",
        id="component-mistyped",
    ),
    pytest.param(
        {"components": [{"module": "keras_tcn", "version": "3.5.5"}]},
        "{manifest}: components[0].module: cannot import component 'keras_tcn': no module "
        "named 'keras_tcn'; 'keras_tcn' is the name of an installed distribution, whose module "
        "is 'tcn': write that under 'module'",
        id="distribution-named-as-component",
    ),
]


@pytest.mark.parametrize(("changes", "line"), MISTAKES)
def test_build_names_the_mistake_before_importing_tensorflow(
    tmp_path: Path, poisoned: dict[str, str], changes: dict[str, object], line: str
) -> None:
    manifest = _project(tmp_path, **changes)
    out = tmp_path / "out"
    result = run_bundle("build", str(manifest), "-o", str(out), env=poisoned)
    assert result.stderr.splitlines() == [f"bundle: error: {line.format(manifest=manifest)}"]
    # a manifest mistake is bad input (2); a component that cannot be imported, a failed build (1)
    assert result.returncode == (1 if "components" in changes else 2)
    assert not out.exists()


OUTPUTS = [
    pytest.param(
        "bundle",
        False,
        "{out}: already exists; pass --force to replace it",
        id="a-bundle-without-force",
    ),
    pytest.param(
        "notes",
        False,
        "{out}: exists and is not a bundle (no bundle.lock.json); it is never replaced: choose "
        "another output",
        id="a-folder-without-force-is-not-told-to-force",
    ),
    pytest.param(
        "notes",
        True,
        "{out}: exists and is not a bundle (no bundle.lock.json); it is never replaced: choose "
        "another output",
        id="a-folder-with-force",
    ),
    pytest.param(
        "file",
        False,
        "{out}: exists and is not a bundle folder; it is never replaced: choose another output",
        id="a-file",
    ),
]


@pytest.mark.parametrize(("kind", "force", "line"), OUTPUTS)
def test_an_output_in_the_way_is_told_before_importing_tensorflow(
    tmp_path: Path, poisoned: dict[str, str], kind: str, force: bool, line: str
) -> None:
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("x")
    else:
        out.mkdir()
        (out / ("bundle.lock.json" if kind == "bundle" else "notes.txt")).write_text("{}")
    before = sorted(p.name for p in out.iterdir()) if out.is_dir() else out.read_text()
    force_flag = ["--force"] if force else []
    result = run_bundle("build", str(_project(tmp_path)), "-o", str(out), *force_flag, env=poisoned)
    assert result.stderr.splitlines() == [f"bundle: error: {line.format(out=out)}"]
    assert result.returncode == 2
    assert (sorted(p.name for p in out.iterdir()) if out.is_dir() else out.read_text()) == before


def test_the_api_checks_the_same_before_importing(tmp_path: Path) -> None:
    manifest = _project(tmp_path, components=[{"module": "acme_layers.layer", "version": "1.2.0"}])
    with pytest.raises(ComponentError) as caught:
        build_bundle(manifest, tmp_path / "out")
    assert caught.value.field == "components[0].module"
    assert not (tmp_path / "out").exists()
