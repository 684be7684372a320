"""Build: manifest -> temporary folder -> artifacts -> lock -> atomic rename into place.

The pipeline is here; each step is in its own module: import and pin the components
(``bundler.build.pins``) and call the factory (``bundler.build.factory``), with the manifest's
``paths`` on ``sys.path``; save ``model.keras``, pin the objects its config uses and the sources
defining them, refusing any no component covers (``bundler.build.pins``); canonicalise and align
``model.keras`` (``bundler.build.reproducible``, ``bundler.files.keras_layout``) and hash it on
another core while the SavedModel is exported (``bundler.build.export``) and the golden examples are
made (``bundler.load.golden``); hash every other file; judge the exported graph as verify will,
recording the op libraries it needs (``bundler.scans.graph``); write the lock
(``bundler.build.lock_writer``); have a fresh interpreter load the folder as a service would
(``bundler.build.rehearsal.run``: started when the build starts, so its imports overlap the export,
handed the folder once the lock is written, its verdict awaited before anything is renamed); and
commit the folder atomically (``bundler.files.atomic``): a build is all or nothing, and what it
commits has loaded once.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bundler.build.export import export_saved_model
from bundler.build.factory import import_keras, make_model
from bundler.build.lock_writer import files_table, write_lock
from bundler.build.pins import pin_component, pin_used_objects
from bundler.build.preflight import check_build_inputs
from bundler.build.rehearsal.run import NOT_REHEARSED, Rehearsal, RehearsalReport
from bundler.build.reproducible import canonicalise_keras_file, canonicalise_saved_model
from bundler.errors import BuildError, ManifestError
from bundler.files.atomic import fsync_path, install, prepare_workdir
from bundler.files.hashing import FileDigest, ProgressFactory, hash_files
from bundler.files.keras_layout import align_weights
from bundler.frameworks.installed import require_tensorflow
from bundler.load.golden import EXAMPLES_DIR, generate_example, run_example
from bundler.lock.model import Lock
from bundler.manifest.reader import ManifestSource, read_manifest
from bundler.manifest.schema import Manifest
from bundler.scans.config import read_keras_config
from bundler.scans.graph import check_export

KERAS_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"

Stage = Callable[[str], None]


@dataclass(frozen=True)
class Bundle:
    """A bundle on disk and its lock."""

    path: Path
    lock: Lock
    model: Any = field(default=None, compare=False, repr=False)  # the Keras model just saved
    notes: tuple[str, ...] = ()  # what the build decided on its own (a generated example, ...)
    rehearsal: RehearsalReport = NOT_REHEARSED  # whether a fresh interpreter loaded it

    @property
    def digest(self) -> str:
        """The bundle's digest: the sha256 of its files table (``sha256:<hex>``)."""
        return self.lock.digest

    def to_json(self) -> dict[str, Any]:
        """What ``bundle build --json`` reports about the bundle (it adds the time it took)."""
        return {
            "bundle": str(self.path),
            "name": self.lock.name,
            "version": self.lock.version,
            "digest": self.digest,
            "files": len(self.lock.files),
            "bytes": self.lock.total_size,
            "notes": list(self.notes),
            "rehearsal": self.rehearsal.to_json(),
        }


def default_output(manifest: Manifest) -> Path:
    return Path("bundles") / f"{manifest.name}-{manifest.version}"


# -- the build ------------------------------------------------------------------------------------


def build_bundle(
    manifest: str | Path | Manifest | ManifestSource,
    out: str | Path | None = None,
    *,
    force: bool = False,
    rehearse: bool | Rehearsal = True,
    on_stage: Stage | None = None,
    on_hashing: ProgressFactory | None = None,
) -> Bundle:
    """Build a bundle from a manifest (a file, or a Manifest whose paths resolve from the cwd).

    ``rehearse`` (default True) has a fresh interpreter load the bundle before it is put in place,
    seeing only the installed packages and the declared components, and refuses the build if it
    cannot (``bundler.build.rehearsal.run``); ``False`` skips that, and the lock records it. A
    ``Rehearsal`` already started (``Rehearsal.start(source)``, so its imports overlap the caller's)
    is used, and closed, by this build. ``on_stage(text)`` is told each stage;
    ``on_hashing(total_bytes)`` may return a callback that is given the bytes hashed as they are
    (and whose ``close()``, if any, is called at the end).
    """
    rehearsal = rehearse if isinstance(rehearse, Rehearsal) else None
    try:
        require_tensorflow("building a bundle")
        source = _as_source(manifest)
        stage = on_stage or (lambda _: None)
        target = Path(out) if out is not None else default_output(source.manifest)
        target = Path(os.path.abspath(target))
        check_build_inputs(source, target, force)  # what can be told before TensorFlow loads
        workdir = prepare_workdir(target, force)
        try:
            if rehearse is True:
                rehearsal = Rehearsal.start(source)  # its imports run while this build works
            lock, model, notes, report = _build_into(
                source, workdir, stage, on_hashing, rehearsal, target
            )
            if rehearsal is not None:
                rehearsal.close()  # its verdict is in: nothing of it outlives the rename
            stage("installing")
            install(workdir, target, force)
        except BaseException as error:
            shutil.rmtree(workdir, ignore_errors=True)
            if isinstance(error, OSError):  # the disk filled up, a file grew over RLIMIT_FSIZE
                raise BuildError(
                    f"writing the bundle failed: {error.strerror or error}", path=target
                ) from error
            raise
    finally:
        if rehearsal is not None:
            rehearsal.close()
    return Bundle(target, lock, model, tuple(notes), report)


def _as_source(manifest: str | Path | Manifest | ManifestSource) -> ManifestSource:
    if isinstance(manifest, ManifestSource):
        return manifest
    if isinstance(manifest, Manifest):
        return ManifestSource(manifest, Path.cwd() / "manifest.yaml")
    return read_manifest(manifest)


@contextlib.contextmanager
def _build_path(source: ManifestSource) -> Iterator[None]:
    """The manifest's ``paths`` on sys.path for the build only."""
    entries = [str(source.root / entry) for entry in source.manifest.paths]
    for entry, rel in zip(entries, source.manifest.paths, strict=False):
        if not os.path.isdir(entry):
            raise ManifestError(
                f"folder {rel!r} does not exist", path=source.path, field="paths", value=rel
            )
    saved = list(sys.path)
    sys.path[:0] = entries
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.path[:] = saved


def _build_into(
    source: ManifestSource,
    workdir: Path,
    stage: Stage,
    on_hashing: ProgressFactory | None,
    rehearsal: Rehearsal | None,
    target: Path,
) -> tuple[Lock, Any, list[str], RehearsalReport]:
    manifest = source.manifest
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # components usually import TensorFlow
    with _build_path(source):
        stage("importing components")
        components = [pin_component(source, index) for index in range(len(manifest.components))]
        keras = import_keras()
        stage(f"calling {manifest.model.factory}")
        model = make_model(source, keras)
    stage("saving model.keras")
    try:
        model.save(workdir / KERAS_FILE)
    except Exception as error:
        raise BuildError(
            f"Keras could not save the model: {type(error).__name__}: {error}",
            path=source.path,
            field="model.factory",
        ) from error
    notes: list[str] = []
    pin_used_objects(source, components, read_keras_config(workdir / KERAS_FILE), notes, model)
    # model.keras is final once canonical and aligned: rewrite, hash (and flush) it on another core
    # while TensorFlow exports, so each file is hashed once, right after it is written, and the
    # build waits for no extra pass
    with ThreadPoolExecutor(1, thread_name_prefix="bundler-early-hash") as early:
        keras_hashed = early.submit(_canonical_keras_digest, workdir)
        stage("exporting saved_model/")
        export_saved_model(model, workdir / SAVED_MODEL_DIR, source)
        canonicalise_saved_model(workdir / SAVED_MODEL_DIR)
        examples = []
        if manifest.examples:
            stage("running golden examples")
            examples = [
                run_example(model, source, index, workdir)
                for index in range(len(manifest.examples))
            ]
        elif manifest.examples is None:
            stage("generating a golden example")
            examples, note = generate_example(model, workdir)
            notes.append(note)
    stage("hashing files")
    files = files_table(workdir, on_hashing, known=keras_hashed.result())
    # the graph verify and load will judge: refused here, not written to fail its own verify
    op_libraries = check_export(workdir, SAVED_MODEL_DIR, files, source.path)
    artifacts = {
        "keras": KERAS_FILE,
        "saved_model": SAVED_MODEL_DIR,
        "examples": EXAMPLES_DIR if examples else None,
    }
    # the lock says the bundle was rehearsed before it is: a failed rehearsal leaves no bundle
    rehearsed = RehearsalReport(True, len(examples)) if rehearsal else NOT_REHEARSED
    lock = write_lock(
        workdir,
        manifest,
        components=components,
        artifacts=artifacts,
        files=files,
        examples=examples,
        keras=keras,
        rehearsal=rehearsed.lock_entry(),
        op_libraries=op_libraries,
    )
    if rehearsal is None:
        return lock, model, notes, NOT_REHEARSED
    rehearsal.hand_over(workdir, target)
    stage("rehearsing the load in a fresh interpreter")
    return lock, model, notes, rehearsal.verdict()


def _canonical_keras_digest(workdir: Path) -> dict[str, FileDigest | OSError]:
    canonicalise_keras_file(workdir / KERAS_FILE)  # same model, same bytes
    align_weights(workdir / KERAS_FILE)  # then weights first, at 4096: loads read them in place
    return hash_files(workdir, [KERAS_FILE], then=fsync_path)
