"""Bundles as CNCF ModelPack artifacts, against a real registry and the real ModelPack client.

``modelpack-client`` (PyPI) is a ModelPack client that knows nothing of bundler: what it pulls from
our pushes must be a bundle folder ``bundle verify`` accepts, and what it pushes around a bundle
folder must pull with ``bundle pull``. Artifacts in bundler's own format keep pulling.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bundler import Bundle, load_bundle, verify_bundle
from bundler.errors import IntegrityError, SignatureError, UsageError
from bundler.lock.layout import LOCK_FILENAME, OPENSSF_SIGNATURE_FILENAME, SIGNATURE_FILENAME
from bundler.registry import modelpack as spec
from bundler.registry.api import fetch
from bundler.registry.api import push as push_bundle
from bundler.registry.transfer import PushFormat
from bundler.trust.signing import keygen, sign_bundle, verify_signature

from ..conftest import (
    Registry,
    cli_env,
    require_module,
    run_bundle,
    service_env,
)
from ..fuzzing import FUZZ, assert_pull_gives_a_verdict, mutated_document
from ..hostile_registry import HostileRegistry

modelpack_client = require_module("modelpack_client")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("keys")
    return {
        "bundler": keygen(folder / "publisher"),
        "openssf": keygen(folder / "publisher-ec", type="ec-p256"),
    }


@pytest.fixture(scope="module")
def signed(
    built: dict[str, Bundle],
    keys: dict[str, tuple[Path, Path]],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Path]:
    """The custom_layer example (a component and a Keras model), signed in each format."""
    out = {}
    for kind, (private, _) in keys.items():
        copy = tmp_path_factory.mktemp(kind) / "custom_layer"
        shutil.copytree(built["custom_layer"].path, copy)
        sign_bundle(copy, private, format=kind)
        out[kind] = copy
    return out


def client() -> Any:
    return modelpack_client.ModelPackClient(insecure=True)


def test_the_modelpack_client_pulls_a_folder_that_bundle_verify_accepts(
    signed: dict[str, Path], keys: dict[str, tuple[Path, Path]], registry: Registry, tmp_path: Path
) -> None:
    bundle = signed["bundler"]
    pushed = push_bundle(bundle, f"oci://{registry.host}/ml/layer")
    reference = f"{registry.host}/ml/layer@{pushed.digest}"
    result = client().pull(reference, tmp_path / "pulled")

    assert verify_bundle(tmp_path / "pulled").ok
    assert verify_signature(tmp_path / "pulled", keys["bundler"][1]).startswith("sha256:")
    lock = json.loads((bundle / LOCK_FILENAME).read_text())
    pulled = sorted(str(path.relative_to(tmp_path / "pulled")) for path in result.files)
    assert pulled == sorted([*lock["files"], LOCK_FILENAME, SIGNATURE_FILENAME])
    assert result.manifest["artifactType"] == "application/vnd.cncf.model.manifest.v1+json"
    assert result.config["descriptor"] == {
        "name": lock["name"],
        "version": lock["version"],
        "createdAt": lock["created"],
        **({"description": lock["description"]} if lock.get("description") else {}),
    }
    assert result.config["config"] == {"format": "keras"}
    kinds = {
        layer["annotations"]["org.cncf.model.filepath"]: layer["mediaType"]
        for layer in result.manifest["layers"]
    }
    assert kinds[LOCK_FILENAME] == "application/vnd.cncf.model.weight.config.v1.raw"
    assert kinds["model.keras"] == "application/vnd.cncf.model.weight.v1.raw"
    assert kinds[SIGNATURE_FILENAME] == "application/vnd.cncf.model.doc.v1.raw"
    assert kinds["saved_model/variables/variables.index"] == kinds["model.keras"]
    assert kinds["examples/generated.inputs.npz"] == "application/vnd.cncf.model.dataset.v1.raw"
    for layer in result.manifest["layers"]:  # raw layers: the digest is the file's own sha256
        path = tmp_path / "pulled" / layer["annotations"]["org.cncf.model.filepath"]
        assert layer["digest"] == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def _push_with_the_modelpack_client(folder: Path, reference: str) -> str:
    """Push every file of ``folder`` as a raw layer, as a ModelPack user would; the digest."""
    layers = [
        modelpack_client.ModelLayer(
            path=path,
            media_type=spec.media_type_of(str(path.relative_to(folder))),
            artifact_path=str(path.relative_to(folder)),
        )
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    ]
    config = modelpack_client.ModelPackConfig(
        descriptor=modelpack_client.ModelDescriptor(name=folder.name, version="1.0.0")
    )
    result = client().push(reference, layers, config)
    assert result.digest is not None
    return str(result.digest)


def test_bundle_pull_reads_what_the_modelpack_client_pushes(
    signed: dict[str, Path], keys: dict[str, tuple[Path, Path]], registry: Registry, tmp_path: Path
) -> None:
    digest = _push_with_the_modelpack_client(signed["bundler"], f"{registry.host}/ml/theirs:v1")
    result = run_bundle(
        "pull",
        f"oci://{registry.host}/ml/theirs:v1",
        "-o",
        str(tmp_path / "pulled"),
        "--key",
        str(keys["bundler"][1]),
        env=cli_env(BUNDLER_CACHE=str(tmp_path / "cache")),
    )
    assert result.returncode == 0, result.stderr
    assert "signature valid" in result.stdout
    assert (tmp_path / "cache" / "sha256" / digest.split(":", 1)[1] / LOCK_FILENAME).is_file()
    verified = run_bundle(
        "verify", str(tmp_path / "pulled"), "--key", str(keys["bundler"][1]), env=service_env()
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr


@pytest.mark.parametrize("push_format", ["modelpack", "bundler"])
@pytest.mark.parametrize("signature", ["bundler", "openssf"])
def test_either_signature_travels_in_either_format(
    signed: dict[str, Path],
    keys: dict[str, tuple[Path, Path]],
    registry: Registry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    push_format: PushFormat,
    signature: str,
) -> None:
    pushed = push_bundle(
        signed[signature], f"oci://{registry.host}/ml/sig-{signature}", format=push_format
    )
    assert pushed.format == push_format and (pushed.signed_by or "").startswith("sha256:")
    monkeypatch.setenv("BUNDLER_CACHE", str(tmp_path / "cache"))
    path, fetched = fetch(pushed.reference, trusted_keys=[keys[signature][1]])
    assert fetched
    name = OPENSSF_SIGNATURE_FILENAME if signature == "openssf" else SIGNATURE_FILENAME
    assert (path / name).read_bytes() == (signed[signature] / name).read_bytes()


def test_bundles_pushed_in_bundler_format_still_pull_and_load(
    built: dict[str, Bundle], registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = built["custom_layer"].path
    reference = f"oci://{registry.host}/ml/old:1"
    result = run_bundle("push", str(bundle), reference, "--format", "bundler", "--json")
    assert result.returncode == 0, result.stderr
    pushed = json.loads(result.stdout)
    assert pushed["format"] == "bundler"
    monkeypatch.setenv("BUNDLER_CACHE", str(tmp_path / "cache"))
    path, _ = fetch(pushed["reference"])
    assert verify_bundle(path).digest == built["custom_layer"].digest
    with pytest.raises(modelpack_client.InvalidModelPackError, match="not a CNCF ModelPack"):
        client().pull(pushed["reference"].removeprefix("oci://"), tmp_path / "theirs")
    loaded = load_bundle(pushed["reference"])
    assert Path(loaded.path) == path


def test_a_modelpack_artifact_without_a_lock_is_not_a_bundle(
    built: dict[str, Bundle], registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "weights-only"
    folder.mkdir()
    shutil.copy(built["custom_layer"].path / "model.keras", folder / "model.keras")
    _push_with_the_modelpack_client(folder, f"{registry.host}/ml/weights:v1")
    monkeypatch.setenv("BUNDLER_CACHE", str(tmp_path / "cache"))
    reference = f"oci://{registry.host}/ml/weights:v1"
    with pytest.raises(UsageError) as caught:
        fetch(reference)
    assert str(caught.value) == (
        f"{reference} is a ModelPack artifact without a bundle.lock.json layer, so not a bundle"
    )


@pytest.mark.parametrize("how", ["modelpack CLI, tar", "Python API, tar+gzip"])
def test_bundle_pull_unpacks_folders_the_modelpack_client_sends_as_tar_layers(
    built: dict[str, Bundle],
    keys: dict[str, tuple[Path, Path]],
    registry: Registry,
    tmp_path: Path,
    how: str,
) -> None:
    folder = tmp_path / "bundle"
    shutil.copytree(built["sequential"].path, folder)
    sign_bundle(folder, keys["bundler"][0])
    reference = f"{registry.host}/ml/folders:{'cli' if 'CLI' in how else 'api'}"
    entries = sorted(folder.iterdir())
    assert {p.name for p in entries if p.is_dir()} == {"saved_model", "examples"}
    if "CLI" in how:  # a folder given to --layer goes up as one tar layer
        (tmp_path / "config.json").write_text(
            '{"descriptor": {"name": "sequential"}, "config": {}}'
        )
        layers = [f"--layer={p}:{spec.media_type_of(p.name)}" for p in entries]
        pushed = subprocess.run(
            [str(Path(sys.executable).parent / "modelpack"), "--insecure", "push", reference,
             "--config", str(tmp_path / "config.json"), *layers],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert pushed.returncode == 0, pushed.stderr
    else:
        layers = [
            modelpack_client.ModelLayer(path=p, media_type=spec.media_type_of(p.name))
            if p.is_file()
            else modelpack_client.ModelLayer(path=p, media_type=f"{spec.WEIGHT[:-4]}.tar+gzip")
            for p in entries
        ]
        client().push(reference, layers, {"descriptor": {"name": "sequential"}, "config": {}})
    manifest_types = {
        layer["mediaType"]
        for layer in client().pull(reference, tmp_path / "theirs").manifest["layers"]
    }
    assert any(kind.endswith((".tar", ".tar+gzip")) for kind in manifest_types)
    result = run_bundle(
        "pull", f"oci://{reference}", "-o", str(tmp_path / "pulled"),
        "--key", str(keys["bundler"][1]),
        env=cli_env(BUNDLER_CACHE=str(tmp_path / "cache")),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert verify_bundle(tmp_path / "pulled").digest == built["sequential"].digest


def _tar(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, content in members:
            info.size = len(content) if info.isreg() else 0
            archive.addfile(info, io.BytesIO(content) if info.isreg() else None)
    return buffer.getvalue()


def _file(name: str, content: bytes = b"x", **fields: Any) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    for key, value in fields.items():
        setattr(info, key, value)
    return info, content


HOSTILE_TARS: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "path escape": (
        lambda index: _tar([_file("../escape")]),
        "member '../escape' leaves its root through '..'",
    ),
    "symlink": (
        lambda index: _tar(
            [_file("saved_model/saved_model.pb", b"", type=tarfile.SYMTYPE, linkname="/etc/passwd")]
        ),
        "member 'saved_model/saved_model.pb' is not a plain file or folder",
    ),
    "a folder escape": (
        lambda index: _tar([_file("saved_model/../../up", type=tarfile.DIRTYPE)]),
        "member 'saved_model/../../up' leaves its root through '..'",
    ),
    "a file the lock does not list": (
        lambda index: _tar([_file("saved_model/evil.py", b"import os")]),
        "member 'saved_model/evil.py' is not a file the lock lists",
    ),
    "another size than the lock's": (
        lambda index: _tar([_file("saved_model/variables/variables.index", b"short")]),
        "member 'saved_model/variables/variables.index' has 5 bytes, the lock says",
    ),
    "sent twice": (
        lambda index: _tar([_file("saved_model/variables/variables.index", index)] * 2),
        "member 'saved_model/variables/variables.index' is sent twice",
    ),
    "a 2 MiB header": (
        lambda index: _tar(
            [_file("saved_model", type=tarfile.DIRTYPE, pax_headers={"comment": "x" * (2 << 20)})]
        ),
        "not a readable tar archive: a 2097",
    ),
    "more headers than the lock's files": (
        lambda index: gzip.compress(
            _tar([_file("saved_model/variables", type=tarfile.DIRTYPE)] * 36000)
        ),
        "the layer unpacks to more than the lock's files",
    ),
}


@pytest.mark.parametrize("case", HOSTILE_TARS, ids=str)
def test_a_hostile_tar_layer_is_refused_and_leaves_nothing(
    built: dict[str, Bundle],
    registry: Registry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
) -> None:
    make, words = HOSTILE_TARS[case]
    bundle = built["sequential"].path
    index = (bundle / "saved_model/variables/variables.index").read_bytes()
    archive = tmp_path / "saved_model"
    archive.write_bytes(make(index))
    gzipped = archive.read_bytes()[:2] == b"\x1f\x8b"
    layers = [
        modelpack_client.ModelLayer(path=bundle / LOCK_FILENAME, media_type=spec.WEIGHT_CONFIG),
        modelpack_client.ModelLayer(
            path=archive, media_type=f"{spec.WEIGHT[:-4]}.tar{'+gzip' if gzipped else ''}"
        ),
    ]
    slug = re.sub(r"[^a-z0-9]+", "-", case)
    client().push(f"{registry.host}/ml/hostile:{slug}", layers, {"descriptor": {}, "config": {}})
    monkeypatch.setenv("BUNDLER_CACHE", str(tmp_path / "cache"))
    with pytest.raises(IntegrityError) as caught:
        fetch(f"oci://{registry.host}/ml/hostile:{slug}")
    assert words in str(caught.value)
    assert not list((tmp_path / "cache" / "sha256").iterdir())
    assert not (tmp_path / "escape").exists()


def test_a_zstd_layer_is_refused_by_name(
    built: dict[str, Bundle], registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = built["sequential"].path
    layers = [
        modelpack_client.ModelLayer(path=bundle / LOCK_FILENAME, media_type=spec.WEIGHT_CONFIG),
        modelpack_client.ModelLayer(
            path=bundle / "saved_model", media_type="application/vnd.cncf.model.weight.v1.tar+zstd"
        ),
    ]
    client().push(f"{registry.host}/ml/zstd:v1", layers, {"descriptor": {}, "config": {}})
    monkeypatch.setenv("BUNDLER_CACHE", str(tmp_path / "cache"))
    with pytest.raises(IntegrityError) as caught:
        fetch(f"oci://{registry.host}/ml/zstd:v1")
    assert (
        "a layer's path 'saved_model' is a 'application/vnd.cncf.model.weight.v1.tar+zstd' layer; "
        "bundler reads the ModelPack media types ending in .raw, .tar and .tar+gzip"
    ) in str(caught.value)


def _layer(path: str, media_type: str, digit: str) -> dict[str, Any]:
    return {
        "mediaType": media_type,
        "digest": "sha256:" + digit * 64,
        "size": 10,
        "annotations": {"org.cncf.model.filepath": path, "org.opencontainers.image.title": path},
    }


VALID_MODELPACK = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "artifactType": spec.ARTIFACT_TYPE,
    "config": {"mediaType": spec.CONFIG_MEDIA_TYPE, "digest": "sha256:" + "1" * 64, "size": 10},
    "layers": [
        _layer(LOCK_FILENAME, spec.WEIGHT_CONFIG, "2"),
        _layer("model.keras", spec.WEIGHT, "3"),
        _layer("saved_model", "application/vnd.cncf.model.weight.v1.tar+gzip", "4"),
        _layer(OPENSSF_SIGNATURE_FILENAME, spec.DOC, "5"),
    ],
    "annotations": {"org.opencontainers.image.title": "moons"},
}


@pytest.mark.slow
@FUZZ
@given(data=st.data())
def test_fuzzed_modelpack_manifest_is_a_verdict_never_a_crash(
    hostile: HostileRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: st.DataObject
) -> None:
    monkeypatch.setenv("BUNDLER_CACHE", str(tmp_path / "cache"))
    assert_pull_gives_a_verdict(hostile, mutated_document(data, VALID_MODELPACK))


def test_push_refuses_a_model_sig_for_another_bundle(
    built: dict[str, Bundle], signed: dict[str, Path], registry: Registry, tmp_path: Path
) -> None:
    folder = tmp_path / "sequential"
    shutil.copytree(built["sequential"].path, folder)
    shutil.copy(signed["openssf"] / OPENSSF_SIGNATURE_FILENAME, folder)
    with pytest.raises(SignatureError) as caught:
        push_bundle(folder, f"oci://{registry.host}/ml/stale:1")
    assert str(caught.value).startswith(f"{folder / OPENSSF_SIGNATURE_FILENAME}: ")
    assert "the signature is for another bundle (bundle.lock.json differs)" in str(caught.value)
