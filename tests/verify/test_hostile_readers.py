"""Every reader of a bundle reads it as verify does: never outside it, never blocking, bounded.

``bundle diff`` and ``bundle inspect`` read bundles nobody has verified yet (that is often why
one runs them). A bundle's author, or someone on the path, can make ``model.keras`` a link to a
file elsewhere, keep the weights' values in a file outside the bundle (HDF5 external storage), or
point that storage at a FIFO that blocks whoever opens it. Each case below is built on either side
of a diff; diff refuses it naming the file (exit 2: it cannot compare what it may not read) and
prints nothing from outside; inspect shows it as a warning beside the description (exit 0: it
describes); neither ever hangs (every command runs under a timeout, so a regression fails).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ..conftest import CopyBundle, run_bundle
from ..hostile import edit_lock, edit_weights

BIAS = "layers/dense/vars/1"  # float32 (32,) in the sequential example
SECRET = 4321.43  # what the outside file holds: it must never reach the output
TIMEOUT = 60  # seconds: far more than any of these takes; a blocking open fails the test


def _seal(root: Path, relative: str, content: Path) -> None:
    """Seal ``relative`` into the lock as the bytes of ``content`` (read through any link)."""
    data = content.read_bytes()
    entry = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    edit_lock(root, lambda lock: lock["files"].update({relative: entry}))


def _symlinked_model(root: Path, outside: Path) -> None:
    """model.keras a link to another model.keras outside, whose config names a secret layer."""
    elsewhere = outside / "model.keras"
    shutil.copy(root / "model.keras", elsewhere)
    (root / "model.keras").unlink()
    (root / "model.keras").symlink_to(elsewhere)
    _seal(root, "model.keras", elsewhere)


def _external_storage(target: Callable[[Path], Path]) -> Callable[[Path, Path], None]:
    def plant(root: Path, outside: Path) -> None:
        storage = target(outside)

        def external(weights: Any) -> None:
            del weights[BIAS]
            weights.create_dataset(
                BIAS, shape=(32,), dtype="<f4", external=[(str(storage), 0, 128)]
            )

        edit_weights(root, external)

    return plant


def _secret_file(outside: Path) -> Path:
    path = outside / "secret.bin"
    path.write_bytes(np.full(32, SECRET, dtype="<f4").tobytes())
    return path


def _fifo(outside: Path) -> Path:
    path = outside / "fifo"
    os.mkfifo(path)
    return path


def _symlinked_examples(root: Path, outside: Path) -> None:
    """The examples folder a link to one outside, whose recorded outputs hold the secret."""
    elsewhere = outside / "examples"
    shutil.copytree(root / "examples", elsewhere)
    (outputs,) = elsewhere.glob("*.outputs.npz")
    with np.load(outputs) as arrays:
        np.savez(outputs, **{key: np.full_like(arrays[key], SECRET) for key in arrays.files})
    shutil.rmtree(root / "examples")
    (root / "examples").symlink_to(elsewhere, target_is_directory=True)
    for path in elsewhere.iterdir():
        _seal(root, f"examples/{path.name}", path)


# (how to make it, the file named, the problem as verify words it; {outside} is the folder)
HOSTILE: dict[str, tuple[Callable[[Path, Path], None], str, str]] = {
    "model.keras a symlink": (
        _symlinked_model,
        "model.keras",
        "is a symlink; bundles hold plain files only",
    ),
    "weights stored in a file outside": (
        _external_storage(_secret_file),
        "model.keras",
        f"model.weights.h5: '/{BIAS}' keeps its data in another file "
        "('{outside}/secret.bin'); refusing to load it",
    ),
    "weights stored in a FIFO": (
        _external_storage(_fifo),
        "model.keras",
        f"model.weights.h5: '/{BIAS}' keeps its data in another file "
        "('{outside}/fifo'); refusing to load it",
    ),
    "examples a symlinked folder": (
        _symlinked_examples,
        "examples",
        "is a symlink; bundles hold plain files only",
    ),
}


@pytest.fixture()
def pair(copy_bundle: CopyBundle, tmp_path: Path) -> tuple[Path, Path, Path]:
    """(a bundle, another release of it with other weights, a folder outside both)."""
    first = copy_bundle("sequential")
    second = tmp_path / "second"
    shutil.copytree(first, second)

    def shift(weights: Any) -> None:
        weights[BIAS][...] = weights[BIAS][...] + 1.0

    edit_weights(second, shift)
    outside = tmp_path / "outside"
    outside.mkdir()
    return first, second, outside


@pytest.mark.parametrize("side", ["old", "new"])
@pytest.mark.parametrize("case", HOSTILE, ids=str)
def test_diff_refuses_a_bundle_file_it_may_not_read(
    pair: tuple[Path, Path, Path], case: str, side: str
) -> None:
    first, hostile, outside = pair
    make, where, reason = HOSTILE[case]
    make(hostile, outside)
    old, new = (hostile, first) if side == "old" else (first, hostile)
    result = run_bundle("diff", str(old), str(new), timeout=TIMEOUT)
    assert (result.returncode, result.stdout) == (2, ""), result.stdout + result.stderr
    expected = f"bundle: error: {hostile / where}: {reason.format(outside=outside)}\n"
    assert result.stderr == expected


@pytest.mark.parametrize("case", HOSTILE, ids=str)
def test_inspect_warns_of_a_bundle_file_load_would_refuse(
    pair: tuple[Path, Path, Path], case: str
) -> None:
    _, hostile, outside = pair
    make, where, reason = HOSTILE[case]
    make(hostile, outside)
    result = run_bundle("inspect", str(hostile), timeout=TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"  warning: {where}: {reason.format(outside=outside)}" in result.stdout.splitlines()
    assert "4321" not in result.stdout


def test_diff_still_compares_two_plain_bundles(pair: tuple[Path, Path, Path]) -> None:
    """The checks refuse only what they should: the two releases compare as before."""
    first, second, _ = pair
    result = run_bundle("diff", str(first), str(second), timeout=TIMEOUT)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "  ~ dense_2/1 (32,): max abs diff 1" in result.stdout.splitlines()


def test_a_load_without_verification_still_opens_model_keras_as_verify_does(
    pair: tuple[Path, Path, Path],
) -> None:
    """``verify=False`` skips hashing, not the way files are opened: the link is not followed."""
    from bundler import load_bundle
    from bundler.errors import IntegrityError

    _, hostile, outside = pair
    _symlinked_model(hostile, outside)
    with pytest.raises(IntegrityError) as caught:
        load_bundle(hostile, verify=False)
    assert str(caught.value) == (
        f"{hostile / 'model.keras'}: is a symlink; bundles hold plain files only; "
        "refusing to load it"
    )


@pytest.mark.parametrize("kind", ["fifo", "symlink"])
def test_a_glance_at_the_lock_never_blocks_nor_follows_a_link(
    pair: tuple[Path, Path, Path], kind: str
) -> None:
    """What ``bundle serve`` reads before it verifies (the model's name, --watch's digest)."""
    import threading

    from bundler.verify.lock_reader import peek_lock

    first, hostile, _ = pair
    lock = hostile / "bundle.lock.json"
    lock.unlink()
    if kind == "fifo":
        os.mkfifo(lock)
    else:
        lock.symlink_to(first / "bundle.lock.json")
    found: list[object] = []
    glance = threading.Thread(target=lambda: found.append(peek_lock(hostile)), daemon=True)
    glance.start()
    glance.join(TIMEOUT)
    assert found == [None]
    assert (peek_lock(first) or {}).get("name") == "sequential-classifier"
