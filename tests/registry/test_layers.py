"""Layers that cannot make a bundle folder, and what a killed pull leaves behind.

A registry's manifest names each layer's path in the bundle. Two of them can ask for a path to be
a file and a folder at once (``model.keras`` and ``model.keras/inner``, or ``saved_model`` as a
file beside ``saved_model/saved_model.pb``), in either order, as raw layers or through a ModelPack
tar layer: each is refused by name before anything lands in the cache, through both pull formats,
never an internal error. A pull killed while it downloads a tar layer leaves a temporary file the
next pull sweeps, as it sweeps a killed pull's folder.
"""

from __future__ import annotations

import hashlib
import io
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from bundler import Bundle
from bundler.errors import IntegrityError
from bundler.lock.layout import LOCK_FILENAME, canonical_json
from bundler.registry.api import fetch
from bundler.verify.lock_reader import read_lock

from ..conftest import Registry, cli_env
from ..fuzzing import run_main
from ..hostile_registry import HostileRegistry

TITLE = "org.opencontainers.image.title"


def _descriptor(content: bytes, media_type: str) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(content).hexdigest()
    return {"mediaType": media_type, "digest": digest, "size": len(content)}


def _manifest(
    lock: bytes, layers: list[tuple[str, bytes, str]], format: str
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """A manifest of ``format`` (``modelpack`` or ``bundler``) carrying ``lock`` and the layers
    (path, bytes, ModelPack media type), and every blob it names by digest."""
    from bundler.registry import modelpack
    from bundler.registry.artifact import ARTIFACT_TYPE, FILE_MEDIA_TYPE, LOCK_MEDIA_TYPE
    from bundler.registry.client import MANIFEST_MEDIA_TYPE

    blobs: dict[str, bytes] = {}
    described = []
    ours = format == "bundler"
    if not ours:
        layers = [(LOCK_FILENAME, lock, modelpack.WEIGHT_CONFIG), *layers]
    for path, content, media_type in layers:
        descriptor = _descriptor(content, FILE_MEDIA_TYPE if ours else media_type)
        annotations = {TITLE: path} if ours else {modelpack.FILEPATH: path, TITLE: path}
        described.append({**descriptor, "annotations": annotations})
        blobs[descriptor["digest"]] = content
    if ours:
        config_bytes = lock
        config = _descriptor(lock, LOCK_MEDIA_TYPE)
    else:
        parsed, _ = _read_lock_of(lock)
        document = modelpack.config_document(parsed, [layer["digest"] for layer in described])
        config_bytes = canonical_json(document)
        config = _descriptor(config_bytes, modelpack.CONFIG_MEDIA_TYPE)
    blobs[config["digest"]] = config_bytes
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE if ours else modelpack.ARTIFACT_TYPE,
        "config": config,
        "layers": described,
    }
    return manifest, blobs


def _read_lock_of(content: bytes) -> tuple[Any, list[Any]]:
    """The lock these bytes hold, read as a bundle's lock is read."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / LOCK_FILENAME).write_bytes(content)
        return read_lock(Path(folder))


def _push(registry: Registry, name: str, manifest: dict[str, Any], blobs: dict[str, bytes]) -> str:
    """Push the blobs and the manifest as they are, with bundler's own client; the reference."""
    from bundler.registry.client import RegistryClient
    from bundler.registry.reference import parse_reference

    reference = f"oci://{registry.host}/ml/{name}:1"
    client = RegistryClient(parse_reference(reference), insecure=False)
    for digest, content in blobs.items():
        client.put_bytes(content, {"digest": digest, "size": len(content)})
    client.put_manifest(canonical_json(manifest), "1")
    return reference


def _tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


WEIGHT = "application/vnd.cncf.model.weight.v1.raw"
WEIGHT_TAR = "application/vnd.cncf.model.weight.v1.tar"
INDEX = "saved_model/variables/variables.index"

# name: (layers as (path, content, media type), in order; the error's words). {index} is the
# bytes of the sequential example's variables.index, the size its lock gives that member.
CLASHES: dict[str, tuple[list[tuple[str, str, str]], str]] = {
    "model.keras and model.keras/inner": (
        [("model.keras", "zip", WEIGHT), ("model.keras/inner", "x", WEIGHT)],
        "a layer's path 'model.keras/inner' lies inside 'model.keras', which another layer "
        "sends as a file",
    ),
    "model.keras/inner, then model.keras": (
        [("model.keras/inner", "x", WEIGHT), ("model.keras", "zip", WEIGHT)],
        "a layer's path 'model.keras/inner' lies inside 'model.keras', which another layer "
        "sends as a file",
    ),
    "saved_model as a file": (
        [("saved_model", "x", WEIGHT), ("saved_model/saved_model.pb", "pb", WEIGHT)],
        "a layer's path 'saved_model/saved_model.pb' lies inside 'saved_model', which another "
        "layer sends as a file",
    ),
}
TAR_CLASHES: dict[str, tuple[list[tuple[str, str, str]], str]] = {
    "a file, then a tar layer with files inside it": (
        [("saved_model/variables", "x", WEIGHT), ("saved_model", "tar", WEIGHT_TAR)],
        f"the layer's member {INDEX!r} lies inside 'saved_model/variables', which another "
        "layer sent as a file; refusing it",
    ),
    "a tar layer, then a file where its folder is": (
        [("saved_model", "tar", WEIGHT_TAR), ("saved_model/variables", "x", WEIGHT)],
        "a layer's path 'saved_model/variables' is a folder of files another layer sent; "
        "refusing it",
    ),
}


def _layers(spec: list[tuple[str, str, str]], index: bytes) -> list[tuple[str, bytes, str]]:
    contents = {"tar": _tar({INDEX: index})}
    return [(path, contents.get(what, what.encode()), kind) for path, what, kind in spec]


def _assert_refused(reference: str, cache: Path, words: str) -> None:
    with pytest.raises(IntegrityError) as caught:
        fetch(reference)
    assert words in str(caught.value)
    code, _, errors = run_main("pull", reference)
    assert code == 1, errors
    assert errors.startswith("bundle: error: ") and words in errors, errors
    assert "internal error" not in errors
    folder = cache / "sha256"
    assert not (folder.exists() and list(folder.iterdir())), "nothing is left in the cache"


@pytest.mark.parametrize("format", ["modelpack", "bundler"])
@pytest.mark.parametrize("case", CLASHES, ids=str)
def test_a_path_that_is_a_file_and_a_folder_is_refused_by_name(
    built: dict[str, Bundle],
    registry: Registry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    format: str,
) -> None:
    root = built["sequential"].path
    spec, words = CLASHES[case]
    layers = _layers(spec, (root / INDEX).read_bytes())
    manifest, blobs = _manifest((root / LOCK_FILENAME).read_bytes(), layers, format)
    slug = f"{format}-{abs(hash(case))}"
    monkeypatch.setenv("BUNDLER_CACHE", str(tmp_path / "cache"))
    _assert_refused(_push(registry, slug, manifest, blobs), tmp_path / "cache", words)


@pytest.mark.parametrize("case", TAR_CLASHES, ids=str)
def test_a_tar_layer_cannot_put_a_file_where_a_folder_is(
    built: dict[str, Bundle],
    registry: Registry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
) -> None:
    root = built["sequential"].path
    spec, words = TAR_CLASHES[case]
    layers = _layers(spec, (root / INDEX).read_bytes())
    manifest, blobs = _manifest((root / LOCK_FILENAME).read_bytes(), layers, "modelpack")
    monkeypatch.setenv("BUNDLER_CACHE", str(tmp_path / "cache"))
    reference = _push(registry, f"tar-{abs(hash(case))}", manifest, blobs)
    _assert_refused(reference, tmp_path / "cache", words)


def test_a_pull_killed_in_a_tar_layer_leaves_a_file_the_next_pull_sweeps(
    built: dict[str, Bundle], hostile: HostileRegistry, tmp_path: Path
) -> None:
    """The registry double sends half of a tar layer and stalls: the pull is killed there."""
    root = built["sequential"].path
    layers = _layers([("saved_model", "tar", WEIGHT_TAR)], (root / INDEX).read_bytes())
    manifest, blobs = _manifest((root / LOCK_FILENAME).read_bytes(), layers, "modelpack")
    tar_digest = manifest["layers"][1]["digest"]
    hostile.mode = "manifest"
    hostile.manifest = canonical_json(manifest)
    hostile.blobs = blobs
    hostile.stalled = {tar_digest}
    cache = tmp_path / "cache"
    reference = f"oci://{hostile.host}/ml/stalled:1"
    command = [sys.executable, "-m", "bundler", "pull", reference]
    victim = subprocess.Popen(command, env=cli_env(BUNDLER_CACHE=str(cache)))
    deadline = time.monotonic() + 120
    try:
        while not [p for p in (cache / "sha256").glob(".*") if "layer" in p.name]:
            assert victim.poll() is None, "the pull ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    left = sorted(p.name for p in (cache / "sha256").iterdir())
    assert [name for name in left if "layer" in name], left
    # and one as bundler 0.1.0 named it, by a process that is gone too
    legacy = cache / "sha256" / f".{'0' * 64}.bundler-tmp.{victim.pid}.0a1b2c3d.layer"
    legacy.write_bytes(b"half a layer")
    hostile.stalled = set()
    del hostile.blobs[tar_digest]  # the next pull fails at that layer, after its sweep
    code, _, errors = _pull_with_cache(cache, "pull", reference)
    assert code == 1 and "internal error" not in errors, errors
    assert [p.name for p in (cache / "sha256").iterdir()] == []


def _pull_with_cache(cache: Path, *args: str) -> tuple[int, str, str]:
    """The command line in a process of its own, with ``cache`` as its cache."""
    result = subprocess.run(
        [sys.executable, "-m", "bundler", *args],
        env=cli_env(BUNDLER_CACHE=str(cache)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.returncode, result.stdout, result.stderr
