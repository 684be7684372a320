"""The Keras path of a load: model.keras scanned, bounded, then built, its weights read in place.

The loader imports exactly the modules the lock names (the components, and the modules each
records as defining the model's objects) and hands Keras those objects for this one load
(``object_locations``): what a package registers, or forgets to, no longer decides whether a model
loads. Before Keras sees the config it is scanned (``scan``): every serialized object must come
from Keras itself or be one the lock records, from the module it records. Keras 3 refuses to
import other modules on its own, but a bundle must not depend on which Keras release enforces
what. ``safe_mode`` stays on, so Lambda bytecode is refused. Before Keras reads the archive, its
members' sizes and its HDF5 weights are checked (``keras_archive``). When Keras still fails, the
error names the object, the module that defines it and what to do
(``object_locations.keras_failure``), never Keras's dump of the config.

A ``model.keras`` laid out by the build (``keras_layout``: weights first, stored, at 4096) has its
weights read where they lie: the model is built from the config and HDF5 opens ``model.keras``
itself, read-only, through one guarded seam over Keras's private saving steps (``keras_seam``);
any other layout, or a Keras release without that seam, goes through Keras's own loader. Adapted
loads use the adapted config the same way; adapters that migrate weights rewrite the zip in
memory and hand it to Keras's loader. In a verified load of a sharded ``model.keras``
(``load_integrity``) everything before the weights is read through a reader that checks each shard
before it is parsed, and the weights are waited for before they are read. Either way the model's
variables are not filled by their initialisers only to be overwritten by the weights
(``keras_seam.variables_from_weights``): those the weights do not set get their initialiser's value.

Keras deserialization is guarded by one lock, ``KERAS_LOCK``: services load from many threads,
and Keras's registries and naming counters are process-wide.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import threading
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bundler.compat.plan import Plan
from bundler.errors import (
    BundleError,
    IntegrityError,
    LoadError,
    UnsafeBundleError,
    UnsafeLoadWarning,
)
from bundler.files.keras_layout import weights_offset
from bundler.files.window import FileWindow, ShardMismatch, VerifiedFile
from bundler.load.integrity import DeferredChecks
from bundler.load.object_locations import keras_failure, locate_objects
from bundler.lock.model import Lock
from bundler.lock.paths import UnsafeFileError, open_in_bundle
from bundler.scans.config import (
    check_config_modules,
    check_config_objects,
    check_lock_references,
    check_recorded_objects,
    read_config,
)
from bundler.scans.keras_archive import WEIGHTS_MEMBER, check_archive, check_weights
from bundler.verify.checks import changed_while_read

log = logging.getLogger("bundler")

KERAS_LOCK = threading.RLock()
"""Held while Keras (or, on the graph path, TensorFlow) deserializes a model: one at a time."""


def _rewritten(archive: zipfile.ZipFile, config: dict[str, Any], edits: list[Any]) -> io.BytesIO:
    """The .keras archive in memory, with the adapted config and, if adapters say so, weights."""
    from bundler.compat.adapters import apply_to_weights

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as out:
        for info in archive.infolist():
            data = archive.read(info)
            if info.filename == "config.json":
                data = json.dumps(config).encode()
            elif info.filename == "model.weights.h5" and edits:
                data = apply_to_weights(data, edits)
            out.writestr(info, data)
    buffer.seek(0)
    return buffer


class _KerasFile(io.BufferedReader):
    """model.keras opened for Keras, named so that Keras never writes into the bundle.

    Keras copies weights it judges too large for memory (over 512 MB without psutil) into a
    temporary folder beside the file it is given. Beside model.keras that folder would be inside
    the bundle: a `bundle verify` running meanwhile would report an extra file, a killed service
    would leave one behind for good, and a read-only bundle would be read the slow way. Named as
    if it lay in the temporary directory, the file sends that copy there.
    """

    def __init__(self, descriptor: int, size: int) -> None:
        # read with pread: the archive bundler holds open on the same descriptor keeps its place
        super().__init__(FileWindow(descriptor, 0, size), buffer_size=1 << 20)

    @property
    def name(self) -> str:
        import tempfile

        return os.path.join(tempfile.gettempdir(), "model.keras")


def load_keras(
    root: Path, lock: Lock, plan: Plan, unsafe: bool, deferred: DeferredChecks | None = None
) -> tuple[Any, list[str]]:
    """The Keras model: config scanned, archive bounded, then built; weights read in place when
    model.keras is laid out for it (``keras_layout``), else through Keras's own ``load_model``.

    With ``deferred`` (a verified load of large files), everything in model.keras before the
    weights is read through its reader, each shard checked before it is parsed; the shards nobody
    read yet (the weights) are hashed on another thread while the model is built, and waited for
    before the weights are touched.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    reader = deferred.reader if deferred is not None else None
    where = str(root / lock.artifacts.keras)
    modules = [component.module for component in lock.components]
    check_lock_references(lock.components, where)  # before anything the lock records is imported
    custom_objects = locate_objects(lock, plan, where)
    if unsafe:
        message = f"loading {root} with Keras safe_mode OFF: code inside the model will run"
        log.warning(message)
        warnings.warn(message, UnsafeLoadWarning, stacklevel=3)
    keras_name = lock.artifacts.keras
    stream: Any = reader
    if stream is None:
        try:  # opened as every reader of a bundle opens a file (no link, nothing that blocks,
            # the lock's size), once: everything below reads this descriptor
            stream = os.fdopen(open_in_bundle(root, keras_name, lock.files[keras_name].size), "rb")
        except UnsafeFileError as error:
            message = f"{error.reason}; refusing to load it"
            raise IntegrityError(message, path=root / error.relative) from None
    try:
        try:
            archive = zipfile.ZipFile(stream)
        except (ShardMismatch, OSError, EOFError, zipfile.BadZipFile) as error:
            _changed_since_verified(root, lock, deferred)
            raise LoadError(
                f"model.keras is not a readable .keras file: {error}", path=where
            ) from error
        with archive:
            try:
                return _load_keras_archive(
                    root, lock, plan, unsafe, deferred, archive, modules, custom_objects
                )
            except Exception:
                _changed_since_verified(root, lock, deferred)
                raise
    finally:
        if reader is None:
            stream.close()


def _changed_since_verified(root: Path, lock: Lock, deferred: DeferredChecks | None) -> None:
    """After a verified load of model.keras failed: an IntegrityError when a shard read failed
    its digest, or when the file no longer matches the lock (rewritten while it was read), so
    that the verdict is about the bundle, not the parser's complaint about changed bytes."""
    if deferred is None:  # verify=False: nothing was vouched for
        return
    if deferred.failed():
        deferred.weights()  # raises the IntegrityError
    keras_name = lock.artifacts.keras
    changed = changed_while_read(root, keras_name, lock.files[keras_name])
    if changed is not None:
        raise IntegrityError(
            "the bundle changed while it was being loaded; refusing it",
            path=root,
            details=[str(changed)],
        )


def _load_keras_archive(
    root: Path,
    lock: Lock,
    plan: Plan,
    unsafe: bool,
    deferred: DeferredChecks | None,
    archive: zipfile.ZipFile,
    modules: list[str],
    custom_objects: dict[str, Any],
) -> tuple[Any, list[str]]:
    from bundler.frameworks import keras_seam

    keras_name = lock.artifacts.keras
    where = str(root / keras_name)
    reader = deferred.reader if deferred is not None else None
    config = read_config(archive, where)
    check_config_modules(config, modules, where, unsafe=unsafe)
    check_recorded_objects(config, lock.components, where)
    check_config_objects(config, modules, where)
    size = lock.files[keras_name].size
    if reader is None:
        check_archive(archive, size, where)  # before Keras reads
    else:  # the weights' HDF5 is walked once its bytes are verified (in ``verified`` below)
        check_archive(archive, size, where, weights=False)
    applied: list[str] = []
    edits: list[Any] = []
    if plan.adapters:
        from bundler.compat.adapters import apply_to_config

        config, applied, edits = apply_to_config(config, plan.adapters)
    not_in_place = _in_place_reason(archive, reader, edits)
    if not_in_place is None and (seam := keras_seam.unavailable()) is not None:
        not_in_place = f"the Keras seam is unavailable: {seam}"
    # the shards nobody read yet (the weights) are hashed on another core meanwhile
    if deferred is not None:
        deferred.start()

    def verified() -> None:
        if deferred is not None:
            deferred.weights()
        if reader is not None and WEIGHTS_MEMBER in archive.namelist():
            check_weights(archive, archive.getinfo(WEIGHTS_MEMBER), where)

    with (
        KERAS_LOCK,
        keras_seam.variables_from_weights(),
        keras_seam.safe_mode_scope(),
        _quiet_about_unbuilt_optimizers() as done,
    ):
        try:
            if not_in_place is None:
                log.debug("%s: reading the weights in place", where)
                text = json.dumps(config) if applied else archive.read("config.json").decode()
                model = keras_seam.load_in_place(
                    text,
                    Path(where),
                    custom_objects=custom_objects,
                    safe_mode=not unsafe,
                    before_weights=verified,
                )
            else:
                log.debug("%s: loading through keras.saving: %s", where, not_in_place)
                verified()
                source = (
                    _rewritten(archive, config, edits)
                    if plan.adapters
                    else _KerasFile(_descriptor(archive), size)
                )
                with source as stream:
                    model = keras_seam.load_archive(
                        stream, custom_objects=custom_objects, safe_mode=not unsafe
                    )
        except BundleError:
            raise
        except Exception as error:
            text = f"{type(error).__name__}: {error}"
            if "lambda" in text.lower() and "safe" in text.lower():
                raise UnsafeBundleError(
                    "the model contains a Lambda layer with Python bytecode, which safe_mode "
                    "refuses; rebuild without Lambda, or load with unsafe=True if you made it",
                    path=where,
                ) from error
            raise LoadError(keras_failure(error, lock, config), path=where) from error
        done.append(model)
    return model, applied


_OPTIMIZER_SKIPPED = re.compile(
    r"Skipping variable loading for optimizer '[^']*', because it has \d+ variables whereas "
    r"the saved optimizer has (?P<saved>\d+) variables"
)


@contextlib.contextmanager
def _quiet_about_unbuilt_optimizers() -> Iterator[list[Any]]:
    """Keras's warnings of a load, less one that says nothing: a model compiled but never trained
    saves its optimizer unbuilt (``iterations`` and the learning rate), the loader builds it, and
    Keras warns on every load that it skipped the saved variables. When the saved ones are just
    what an unbuilt optimizer of that config holds, nothing was skipped that the fresh optimizer
    lacks, and the warning goes to the debug log; any other mismatch is warned as Keras warns it.
    The loaded model is appended to the list this yields."""
    loaded: list[Any] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield loaded
    optimizer = getattr(loaded[0], "optimizer", None) if loaded else None
    for record in caught:
        skipped = _OPTIMIZER_SKIPPED.match(str(record.message))
        if skipped and optimizer is not None and _unbuilt_count(optimizer) == int(skipped["saved"]):
            log.debug("%s (the saved optimizer was never built: it starts fresh)", record.message)
            continue
        warnings.warn_explicit(record.message, record.category, record.filename, record.lineno)


def _unbuilt_count(optimizer: Any) -> int | None:
    """How many variables an optimizer of this config holds before it is built."""
    try:
        return len(type(optimizer).from_config(optimizer.get_config()).variables)
    except Exception:  # an optimizer that cannot be remade from its config: keep Keras's warning
        return None


def _descriptor(archive: zipfile.ZipFile) -> int:
    """The descriptor of the file ``archive`` reads (bundler's own open, or the verified reader)."""
    source = archive.fp
    if isinstance(source, FileWindow):
        return source.descriptor
    assert source is not None
    return source.fileno()


def _in_place_reason(
    archive: zipfile.ZipFile, reader: VerifiedFile | None, edits: list[Any]
) -> str | None:
    """Why the weights cannot be read in place from this archive, or None when they can."""
    if edits:
        return "adapters migrate the weights, which needs a rewritten copy"
    if not set(archive.namelist()) <= {"config.json", "metadata.json", WEIGHTS_MEMBER}:
        return "the archive holds assets"
    whole = reader or FileWindow(_descriptor(archive), 0, os.fstat(_descriptor(archive)).st_size)
    if weights_offset(whole) is None:
        return "model.keras is not laid out for reading in place (built by an older bundler?)"
    return None
