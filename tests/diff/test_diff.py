"""`bundle diff`: two bundles compared section by section, exit 0 same, 1 different, 2 trouble."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from bundler import Bundle
from bundler.diff.bundles import SECTIONS, diff_bundles

from ..conftest import (
    EXAMPLES,
    CopyBundle,
    Registry,
    cli_env,
    run_bundle,
    run_python,
)
from ..hostile import edit_keras_config, edit_lock, replace_keras_member, reseal


def _build_alone(manifest: str, out: Path) -> Path:
    """A build in a process of its own, as a release is built (layers named as in a fresh one)."""
    manifest_path = str(EXAMPLES / "evolving_layer" / manifest)
    result = run_bundle("build", manifest_path, "-o", str(out), "--no-rehearse")
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="session")
def release_1_0(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_alone("manifest.yaml", tmp_path_factory.mktemp("release") / "demo-1.0.0")


@pytest.fixture(scope="session")
def release_1_1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """evolving-layer-demo 1.1.0 (it needs evolve_layers 1.1.0, so never this process)."""
    return _build_alone("manifest-1.1.0.yaml", tmp_path_factory.mktemp("release") / "demo-1.1.0")


def _weights(root: Path) -> bytes:
    import zipfile

    with zipfile.ZipFile(root / "model.keras") as archive:
        return archive.read("model.weights.h5")


def _edit_weights(root: Path, change: Callable[[Any], None]) -> None:
    buffer = io.BytesIO(_weights(root))
    with h5py.File(buffer, "r+") as h5:
        change(h5)
    replace_keras_member(root, "model.weights.h5", buffer.getvalue())


def _first_dense(root: Path) -> str:
    import zipfile

    with zipfile.ZipFile(root / "model.keras") as archive:
        config = json.loads(archive.read("config.json"))
    name: str = next(
        layer["config"]["name"]
        for layer in config["config"]["layers"]
        if layer["class_name"] == "Dense"
    )
    return name


def _save_npz(path: Path, **arrays: Any) -> None:
    np.savez(path, **arrays)


@pytest.fixture()
def edited(copy_bundle: CopyBundle) -> tuple[Path, Path]:
    """evolving-layer-demo 1.0.0 and a copy with one change in every section."""
    root = copy_bundle("evolving_layer")
    before = root.parent / "original"
    shutil.copytree(root, before)

    def config(document: dict[str, Any]) -> None:
        (blend,) = [
            layer for layer in document["config"]["layers"] if layer["config"]["name"] == "blend"
        ]
        blend["config"]["alpha"] = 0.5

    edit_keras_config(root, config)

    def weights(h5: Any) -> None:
        h5["layers/dense/vars/1"][...] = h5["layers/dense/vars/1"][...] + 1.0
        del h5["layers/dense_1/vars/0"]  # the layer named "y" is the second Dense
        h5["layers/dense_1/vars/0"] = np.zeros((8, 2), dtype="float32")

    _edit_weights(root, weights)
    with np.load(root / "examples/smoke.inputs.npz") as archive:
        inputs = {key: archive[key] + 1.0 for key in archive.files}
    with np.load(root / "examples/smoke.outputs.npz") as archive:
        outputs = {key: archive[key] + 0.5 for key in archive.files}
    _save_npz(root / "examples/smoke.inputs.npz", **inputs)
    _save_npz(root / "examples/smoke.outputs.npz", **outputs)
    (root / "NOTES.txt").write_text("release notes\n")
    reseal(root)

    def lock(document: dict[str, Any]) -> None:
        document["version"] = "1.0.1"
        document["components"][0]["version"] = "1.0.1"
        document["environment"]["numpy"] = "9.9.9"
        document["metadata"] = {"metrics": {"loss": 0.1}, "owners": ["ml@example.com"]}
        document["examples"][0]["atol"] = 1e-3

    edit_lock(root, lock)
    return before, root


def _section(stdout: str, name: str) -> list[str]:
    lines = stdout.splitlines()
    if name not in lines:
        return []
    start = lines.index(name) + 1
    end = start
    while end < len(lines) and lines[end].startswith("  "):
        end += 1
    return lines[start:end]


def test_every_section_names_what_changed(edited: tuple[Path, Path]) -> None:
    before, after = edited
    result = run_bundle("diff", str(before), str(after))
    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert out.splitlines()[0].startswith(f"--- {before}  evolving-layer-demo 1.0.0  sha256:")
    assert out.splitlines()[1].startswith(f"+++ {after}  evolving-layer-demo 1.0.1  sha256:")
    assert _section(out, "identity")[0] == '  ~ version: "1.0.0" -> "1.0.1"'
    assert _section(out, "identity")[1].startswith('  ~ digest: "sha256:')
    assert _section(out, "components") == ['  ~ evolve_layers pinned: "1.0.0" -> "1.0.1"']
    assert _section(out, "frameworks") == ['  ~ numpy: "' + np.__version__ + '" -> "9.9.9"']
    files = _section(out, "files")
    assert [line.split("  ")[1].split()[-1] for line in files] == [
        "NOTES.txt",
        "examples/smoke.inputs.npz",
        "examples/smoke.outputs.npz",
        "model.keras",
    ]
    assert files[0] == "  + NOTES.txt  14 B"
    assert _section(out, "config") == ["  ~ blend config.alpha: 0.25 -> 0.5"]
    hidden = _first_dense(before)  # auto-named: "dense", or "dense_N" in a busy process
    assert _section(out, "weights") == [
        f"  ~ {hidden}/1 (8,): max abs diff 1",
        "  ~ y/0: (8, 1) float32 -> (8, 2) float32",
    ]
    assert _section(out, "metadata") == [
        '  + metrics: {"loss": 0.1}',
        '  + owners: ["ml@example.com"]',
    ]
    assert _section(out, "examples") == [
        "  ~ smoke: inputs changed; output_0 drifted, max abs diff 0.5; atol 1e-06 -> 0.001"
    ]


def test_json_has_the_sections_of_the_text(edited: tuple[Path, Path]) -> None:
    before, after = edited
    text = run_bundle("diff", str(before), str(after)).stdout
    result = run_bundle("diff", str(before), str(after), "--json")
    assert result.returncode == 1, result.stderr
    document = json.loads(result.stdout)
    assert list(document) == ["same", "old", "new", *SECTIONS]
    assert document["same"] is False
    assert document["new"]["version"] == "1.0.1"
    for section in ("identity", "components", "frameworks", "files", "weights", "metadata"):
        assert len(document[section]) == len(_section(text, section)), section
    assert document["weights"][1] == {
        "layer": "y",
        "variable": "0",
        "kind": "changed",
        "old_shape": [8, 1],
        "new_shape": [8, 2],
        "old_dtype": "float32",
        "new_dtype": "float32",
        "max_abs_diff": None,
    }
    assert document["config"] == [
        {
            "layer": "blend",
            "kind": "changed",
            "keys": [{"path": "config.alpha", "kind": "changed", "old": 0.25, "new": 0.5}],
        }
    ]
    (smoke,) = document["examples"]
    assert smoke["inputs_changed"] is True
    assert smoke["drift"] == [{"path": "output_0", "kind": "changed", "old": None, "new": 0.5}]


def test_two_releases_of_an_example_differ_in_weights_config_and_components(
    release_1_0: Path, release_1_1: Path
) -> None:
    result = diff_bundles(release_1_0, release_1_1)
    assert not result.same
    assert [c.path for c in result.components] == [
        "evolve_layers pinned",
        "evolve_layers required",
        "evolve_layers allowed",
        "evolve_layers source",
    ]
    assert [(c.layer, [k.path for k in c.keys]) for c in result.config] == [
        ("blend", ["config.clip"])
    ]
    trained = {(w.layer, w.variable) for w in result.weights}
    assert {(_first_dense(release_1_1), "0"), ("blend", "0"), ("y", "0")} <= trained
    assert all(w.max_abs_diff and w.max_abs_diff > 0 for w in result.weights)
    assert [e.name for e in result.examples] == ["smoke"]
    assert not result.examples[0].inputs_changed and result.examples[0].drift


SAME_WITHOUT_TENSORFLOW = """
import sys
from bundler.diff.bundles import diff_bundles
result = diff_bundles(sys.argv[1], sys.argv[2])
print(result.same, "tensorflow" in sys.modules, "keras" in sys.modules, "h5py" in sys.modules)
"""


def test_identical_bundles_are_decided_from_their_locks(
    built: dict[str, Bundle], tmp_path: Path
) -> None:
    original = built["evolving_layer"].path
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    code = SAME_WITHOUT_TENSORFLOW.replace("sys.argv[1]", repr(str(original)))
    result = run_python(code.replace("sys.argv[2]", repr(str(copy))))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "False", "False", "False"], "no TF, no weights read"
    cli = run_bundle("diff", str(original), str(copy))
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout == f"same  evolving-layer-demo 1.0.0  {built['evolving_layer'].digest}\n"


def test_different_weights_are_read_without_tensorflow(edited: tuple[Path, Path]) -> None:
    before, after = edited
    code = SAME_WITHOUT_TENSORFLOW.replace("sys.argv[1]", repr(str(before)))
    result = run_python(code.replace("sys.argv[2]", repr(str(after))))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False", "False", "True"]


def _no_lock(root: Path) -> None:
    (root / "bundle.lock.json").unlink()


def _garbage_lock(root: Path) -> None:
    (root / "bundle.lock.json").write_text("{not json")


def _garbage_keras(root: Path) -> None:
    (root / "model.keras").write_bytes(b"not a zip at all")
    reseal(root)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        pytest.param(_no_lock, "is not a bundle: it has no bundle.lock.json", id="no-lock"),
        pytest.param(
            _garbage_lock,
            "is not a readable bundle: is not valid JSON (line 1, column 2: "
            "Expecting property name enclosed in double quotes)",
            id="lock-not-json",
        ),
        pytest.param(
            _garbage_keras,
            "model.keras: cannot read it as a .keras file: File is not a zip file",
            id="keras-not-zip",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line(
    copy_bundle: CopyBundle, damage: Callable[[Path], None], message: str
) -> None:
    good = copy_bundle("sequential")
    bad = good.parent / "damaged"
    shutil.copytree(good, bad)
    damage(bad)
    result = run_bundle("diff", str(good), str(bad))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert result.stderr.endswith(f"{message}\n"), result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_a_missing_folder_exits_2(tmp_path: Path) -> None:
    result = run_bundle("diff", str(tmp_path / "nothing"), str(tmp_path / "else"))
    assert result.returncode == 2
    assert result.stderr == f"bundle: error: {tmp_path / 'nothing'}: no such bundle folder\n"


def test_names_from_a_bundle_are_printed_as_inert_text(copy_bundle: CopyBundle) -> None:
    good = copy_bundle("sequential")
    odd = good.parent / "odd"
    shutil.copytree(good, odd)
    edit_lock(odd, lambda lock: lock.update(metadata={"\x1b[2Jkey": "bell\x07\u202e"}))
    result = run_bundle("diff", str(good), str(odd))
    assert result.returncode == 1
    assert _section(result.stdout, "metadata") == ['  + \\x1b[2Jkey: "bell\\u0007\\u202e"']
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout


def test_a_bundle_pulled_from_a_registry_compares_with_a_local_one(
    built: dict[str, Bundle], release_1_1: Path, registry: Registry, tmp_path: Path
) -> None:
    pushed = run_bundle(
        "push", str(built["evolving_layer"].path), f"oci://{registry.host}/ml/demo", "--json"
    )
    assert pushed.returncode == 0, pushed.stderr
    reference = json.loads(pushed.stdout)["reference"]
    env = cli_env(BUNDLER_CACHE=str(tmp_path / "cache"))
    same = run_bundle("diff", reference, str(built["evolving_layer"].path), env=env)
    assert same.returncode == 0, same.stderr
    assert same.stdout.startswith("same  evolving-layer-demo 1.0.0  sha256:")
    changed = run_bundle("diff", reference, str(release_1_1), "--json", env=env)
    assert changed.returncode == 1, changed.stderr
    document = json.loads(changed.stdout)
    assert document["old"]["bundle"] == reference
    assert document["old"]["digest"] == built["evolving_layer"].digest
    assert [c["path"] for c in document["identity"]][:2] == ["version", "digest"]
    assert document["weights"], "the weights were read from the pulled copy"


def _garbage_weights(root: Path) -> None:
    replace_keras_member(root, "model.weights.h5", b"not an HDF5 file")


def _garbage_outputs(root: Path) -> None:
    (root / "examples" / "smoke.outputs.npz").write_bytes(b"PK\x03\x04 not a zip")
    reseal(root)


@pytest.mark.parametrize(
    ("damage", "where", "message"),
    [
        pytest.param(
            _garbage_weights,
            "model.keras",
            "model.weights.h5 in model.keras is not a readable HDF5 file: ",
            id="weights",
        ),
        pytest.param(
            _garbage_outputs,
            "examples/smoke.outputs.npz",
            "cannot read example arrays: ",
            id="example-outputs",
        ),
    ],
)
def test_unreadable_contents_exit_2_naming_the_file(
    copy_bundle: CopyBundle, damage: Callable[[Path], None], where: str, message: str
) -> None:
    good = copy_bundle("with_metadata")
    bad = good.parent / "damaged"
    shutil.copytree(good, bad)
    damage(bad)
    result = run_bundle("diff", str(good), str(bad))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith(f"bundle: error: {bad / where}: {message}"), result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr


PEAK_MEMORY = """
import sys
from bundler.diff.bundles import diff_bundles
result = diff_bundles(sys.argv[1], sys.argv[2])
(big,) = [w for w in result.weights if w.layer == "big"]
status = open("/proc/self/status").read().split("VmHWM:")[1].split()[0]
print(big.max_abs_diff, int(status) // 1024)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_weights_are_compared_in_flat_memory(built: dict[str, Bundle], tmp_path: Path) -> None:
    """Two 192 MB variables are compared without holding either: peak memory stays far below."""
    count = 48 << 20
    roots = []
    for index, value in enumerate((0.0, 0.25)):
        root = tmp_path / f"big-{index}"
        shutil.copytree(built["sequential"].path, root)

        def add(h5: Any, value: float = value) -> None:
            h5.create_dataset("layers/big/vars/0", data=np.full(count, value, dtype="float32"))

        _edit_weights(root, add)
        roots.append(root)
    code = PEAK_MEMORY.replace("sys.argv[1]", repr(str(roots[0])))
    result = run_python(code.replace("sys.argv[2]", repr(str(roots[1]))))
    assert result.returncode == 0, result.stderr
    difference, peak_mb = result.stdout.split()
    assert float(difference) == 0.25
    assert int(peak_mb) < 192, f"peak {peak_mb} MB: a whole variable was held in memory"
