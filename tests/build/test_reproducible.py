"""Reproducible builds: the same manifest, built twice in fresh processes, gives the same bytes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from bundler import Bundle
from bundler.build.reproducible import DATE_SAVED, canonical_config, canonicalise_keras_file
from bundler.load.golden import generated_inputs, named_outputs

from ..conftest import EXAMPLE_NAMES, EXAMPLES, ROOT, cli_env, run_bundle


def _tree(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_every_example_builds_to_the_same_bytes_in_two_fresh_processes(
    name: str, tmp_path: Path
) -> None:
    manifest = EXAMPLES / name / "manifest.yaml"
    outs = [tmp_path / "first" / name, tmp_path / "elsewhere" / "second" / name]
    env = cli_env(SOURCE_DATE_EPOCH="1700000000")
    command = [sys.executable, "-m", "bundler", "build", str(manifest), "--no-rehearse", "--json"]
    command.append("-o")
    builds = [
        subprocess.Popen(
            [*command, str(out)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for out in outs
    ]
    results = [build.communicate(timeout=300) for build in builds]
    for build, (_, stderr) in zip(builds, results, strict=True):
        assert build.returncode == 0, stderr.decode()
    digests = [json.loads(stdout)["digest"] for stdout, _ in results]
    assert digests[0] == digests[1]
    first, second = (_tree(out) for out in outs)
    assert sorted(first) == sorted(second)
    differing = [path for path in first if first[path] != second[path]]
    assert differing == [], f"these files differ between two builds: {differing}"
    lock = json.loads(first["bundle.lock.json"])
    assert lock["created"] == "2023-11-14T22:13:20Z", "created honours SOURCE_DATE_EPOCH"


def test_created_stays_outside_the_digest(built: dict[str, Bundle]) -> None:
    from bundler.lock.model import lock_digest

    lock = json.loads((built["sequential"].path / "bundle.lock.json").read_text())
    assert (
        lock_digest(lock)
        == lock["digest"]
        == lock_digest({**lock, "created": "1999-12-31T23:59:59Z"})
    )
    assert "bundle.lock.json" not in lock["files"]


# bare Keras warns on every load of a compiled, untrained model (tcn_forecaster) that it skipped
# the unbuilt optimizer's two variables; bundler's loader does not (test_build_load)
@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer:UserWarning")
@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_plain_keras_and_tensorflow_load_what_the_build_canonicalised(
    name: str, built: dict[str, Bundle]
) -> None:
    import keras
    import tensorflow as tf

    root = built[name].path
    with zipfile.ZipFile(root / "model.keras") as archive:
        assert archive.testzip() is None
        infos = archive.infolist()
        names = [info.filename for info in infos]  # weights first (read in place), then by name
        assert names == ["model.weights.h5", *sorted(n for n in names if n != "model.weights.h5")]
        assert {info.date_time for info in infos} == {(1980, 1, 1, 0, 0, 0)}
        assert json.loads(archive.read("metadata.json"))["date_saved"] == DATE_SAVED
    model = keras.models.load_model(root / "model.keras")  # the components are imported
    serving = tf.saved_model.load(str(root / "saved_model")).signatures["serving_default"]
    inputs = generated_inputs(model)  # any input dtypes and names (keras_hub takes a dict)
    served = serving(**{key: tf.constant(value) for key, value in inputs.items()})
    expected = named_outputs(model(inputs if len(inputs) > 1 else next(iter(inputs.values()))))
    assert sorted(served) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(served[key].numpy(), value, rtol=1e-6, atol=1e-6)


def test_shared_object_ids_are_renumbered_keeping_which_references_share() -> None:
    config = {
        "a": {"shared_object_id": 140211, "x": [{"shared_object_id": 99}]},
        "b": {"shared_object_id": 140211},
    }
    assert json.loads(canonical_config(json.dumps(config))) == {
        "a": {"shared_object_id": 1, "x": [{"shared_object_id": 2}]},
        "b": {"shared_object_id": 1},
    }


def test_a_keras_zip_is_rewritten_to_fixed_dates_and_order(tmp_path: Path) -> None:
    path = tmp_path / "model.keras"
    weights = bytes(range(256)) * 4000
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"date_saved": "2026-01-02@03:04:05"}))
        archive.writestr(zipfile.ZipInfo("model.weights.h5", (2026, 5, 6, 7, 8, 10)), weights)
        archive.writestr("config.json", json.dumps({"shared_object_id": 7}))
        archive.writestr("assets/vocab.txt", "a\nb\n", compress_type=zipfile.ZIP_DEFLATED)
    canonicalise_keras_file(path)
    once = path.read_bytes()
    canonicalise_keras_file(path)
    assert path.read_bytes() == once, "canonical is a fixed point"
    with zipfile.ZipFile(io.BytesIO(once)) as archive:
        assert archive.testzip() is None
        assert archive.namelist() == [
            "assets/vocab.txt",
            "config.json",
            "metadata.json",
            "model.weights.h5",
        ]
        assert archive.read("model.weights.h5") == weights
        assert archive.read("assets/vocab.txt") == b"a\nb\n"
        assert json.loads(archive.read("config.json")) == {"shared_object_id": 1}
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}


UNSEEDED = """\
import keras


def build():
    # no keras.utils.set_random_seed(...): each process draws other initial weights
    inputs = keras.Input(shape=(2,), name="x")
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(inputs))
"""


@pytest.fixture()
def unseeded(tmp_path: Path) -> Path:
    """A manifest whose factory does not seed: each build draws other weights."""
    (tmp_path / "src" / "unseeded_demo").mkdir(parents=True)
    (tmp_path / "src" / "unseeded_demo" / "__init__.py").write_text("")
    (tmp_path / "src" / "unseeded_demo" / "model.py").write_text(UNSEEDED)
    (tmp_path / "manifest.yaml").write_text(
        "apiVersion: bundler/v1\nname: unseeded\nversion: 0.1.0\n"
        "model: {factory: 'unseeded_demo.model:build'}\ncomponents: []\npaths: [src]\n"
    )
    return tmp_path / "manifest.yaml"


def test_check_reproducible_names_what_an_unseeded_factory_changes(
    unseeded: Path, tmp_path: Path
) -> None:
    result = run_bundle(
        "build",
        str(unseeded),
        "-o",
        str(tmp_path / "out"),
        "--check-reproducible",
        "--no-rehearse",
    )
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("built ")
    assert lines[1].startswith("NOT reproducible: a second build in a fresh process gave sha256:")
    assert any(line.startswith("  ~ model.keras  ") for line in lines), lines
    assert any(line.startswith("  ~ out/0 (2, 3): max abs diff ") for line in lines), lines
    assert (tmp_path / "out" / "bundle.lock.json").is_file(), "the first build stays"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == [], "the second build is removed"


def test_a_keras_zip_past_the_zip64_limits_stays_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Members and offsets over 4 GiB need zip64 records; a lower threshold writes them here."""
    import bundler.build.reproducible

    monkeypatch.setattr(bundler.build.reproducible, "ZIP64_ABOVE", 100)
    path = tmp_path / "model.keras"
    weights = bytes(range(256)) * 1000
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps({"shared_object_id": 7, "pad": "x" * 200}))
        archive.writestr("model.weights.h5", weights)
        archive.writestr("metadata.json", json.dumps({"date_saved": "2026-01-02@03:04:05"}))
    canonicalise_keras_file(path)
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        assert archive.read("model.weights.h5") == weights
        assert json.loads(archive.read("metadata.json")) == {"date_saved": DATE_SAVED}
        assert [info.file_size for info in archive.infolist()] == [
            len(archive.read(name)) for name in archive.namelist()
        ]
    assert b"PK\x06\x06" in path.read_bytes(), "a zip64 end record was written"


def test_check_reproducible_in_json_carries_the_differences(unseeded: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_bundle(
        "build", str(unseeded), "-o", str(out), "--check-reproducible", "--json", "--no-rehearse"
    )
    assert result.returncode == 1, result.stderr
    document = json.loads(result.stdout)
    check = document["reproducible"]
    assert check["reproducible"] is False
    assert check["digests"][0] == document["digest"] != check["digests"][1]
    assert [w["layer"] for w in check["differences"]["weights"]] == ["out"]
    assert "model.keras" in [f["path"] for f in check["differences"]["files"]]
