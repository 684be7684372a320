"""Build: manifest -> temporary folder -> artifacts -> lock -> atomic rename into place.

The steps, each in its own module: import the components and call the factory (here), save and
canonicalise ``model.keras`` (``bundler.reproducible``), pin the objects the saved config uses and
the sources defining them (here, with ``bundler.components``), export the SavedModel
(``bundler.export``), make the golden examples (``bundler.golden``), hash every file and write
the lock (here), and commit the folder atomically (``bundler.atomic``): a build is all or nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import os
import platform
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .atomic import fsync_path, install, prepare_workdir
from .bundle_paths import walk_tree
from .components import (
    defining_sources,
    import_component,
    imported_version,
    package_base,
    sources_digest,
)
from .digest import SHARD_SIZE, FileDigest, ProgressFactory, hash_files, metered
from .errors import (
    BuildError,
    BuildWarning,
    ComponentError,
    ManifestError,
    UsageError,
)
from .export import export_saved_model
from .frameworks import require_tensorflow
from .golden import EXAMPLES_DIR, generate_example, run_example
from .keras_layout import align_weights
from .lock import FORMAT, LOCK_FILENAME, Lock, files_digest
from .lock_schema import Lock as LockSchema
from .manifest import ManifestSource, read_manifest
from .manifest_schema import Manifest
from .reproducible import canonicalise_keras_file, canonicalise_saved_model
from .scan import UsedObject, covering_component, custom_objects_used, read_keras_config
from .version_ranges import caret_range, parse_range

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

    @property
    def digest(self) -> str:
        return self.lock.digest


def default_output(manifest: Manifest) -> Path:
    return Path("bundles") / f"{manifest.name}-{manifest.version}"


# -- the build ------------------------------------------------------------------------------------


def build_bundle(
    manifest: str | Path | Manifest | ManifestSource,
    out: str | Path | None = None,
    *,
    force: bool = False,
    on_stage: Stage | None = None,
    on_hashing: ProgressFactory | None = None,
) -> Bundle:
    """Build a bundle from a manifest (a file, or a Manifest whose paths resolve from the cwd).

    ``on_stage(text)`` is told each stage; ``on_hashing(total_bytes)`` may return a callback that
    is given the bytes hashed as they are (and whose ``close()``, if any, is called at the end).
    """
    require_tensorflow("building a bundle")
    source = _as_source(manifest)
    stage = on_stage or (lambda _: None)
    target = Path(out) if out is not None else default_output(source.manifest)
    target = Path(os.path.abspath(target))
    workdir = prepare_workdir(target, force)
    try:
        lock, model, notes = _build_into(source, workdir, stage, on_hashing)
        stage("installing")
        install(workdir, target, force)
    except BaseException as error:
        shutil.rmtree(workdir, ignore_errors=True)
        if isinstance(error, OSError):  # the disk filled up, a file grew over RLIMIT_FSIZE, ...
            raise BuildError(
                f"writing the bundle failed: {error.strerror or error}", path=target
            ) from error
        raise
    return Bundle(target, lock, model, tuple(notes))


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
    source: ManifestSource, workdir: Path, stage: Stage, on_hashing: ProgressFactory | None = None
) -> tuple[Lock, Any, list[str]]:
    manifest = source.manifest
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # components usually import TensorFlow
    with _build_path(source):
        stage("importing components")
        components = [_lock_component(source, index) for index in range(len(manifest.components))]
        keras = _import_keras()
        stage(f"calling {manifest.model.factory}")
        model = _make_model(source, keras)
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
    _pin_used_objects(source, components, read_keras_config(workdir / KERAS_FILE), notes)
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
    # checked against the models the published schema comes from, then written from the value
    # object every reader of the lock builds from the file
    checked = LockSchema.model_validate(
        {
            "format": FORMAT,
            "name": manifest.name,
            "version": manifest.version,
            "description": manifest.description,
            "digest": files_digest(files),
            "manifest": manifest.model_dump(mode="json"),
            "components": components,
            "environment": _environment(keras),
            "artifacts": {
                "keras": KERAS_FILE,
                "saved_model": SAVED_MODEL_DIR,
                "examples": EXAMPLES_DIR if examples else None,
            },
            "files": files,
            "metadata": manifest.metadata,
            "examples": examples,
            "created": _created(),
        }
    )
    lock = Lock.from_dict(checked.model_dump(mode="json"))
    (workdir / LOCK_FILENAME).write_bytes(lock.to_json())
    return lock, model, notes


def _canonical_keras_digest(workdir: Path) -> dict[str, FileDigest | OSError]:
    canonicalise_keras_file(workdir / KERAS_FILE)  # same model, same bytes
    align_weights(workdir / KERAS_FILE)  # then weights first, at 4096: loads read them in place
    return hash_files(workdir, [KERAS_FILE], then=fsync_path)


def _lock_component(source: ManifestSource, index: int) -> dict[str, Any]:
    spec = source.manifest.components[index]
    at = f"components[{index}]"
    module = import_component(spec.module, field=f"{at}.module", path=str(source.path))
    installed = imported_version(module)
    if installed.version is None:
        raise ComponentError(
            f"component {spec.module!r} has no __version__ and no installed distribution; "
            "give the module a __version__ string",
            path=source.path,
            field=f"{at}.module",
            value=spec.module,
        )
    try:
        requirement = parse_range(spec.version)
        fits = requirement.contains(installed.version)
    except ValueError as error:
        raise ComponentError(
            f"installed version {installed.version!r} of {spec.module!r} is not a version: {error}",
            path=source.path,
            field=f"{at}.version",
            value=installed.version,
        ) from error
    if not fits:
        raise ComponentError(
            f"installed {spec.module} {installed.version} does not satisfy the manifest's "
            f"requirement {spec.version!r}; install a matching version or change the manifest",
            path=source.path,
            field=f"{at}.version",
            value=spec.version,
        )
    compatible = spec.compatible or caret_range(installed.version)
    if not parse_range(compatible).contains(installed.version):
        raise ComponentError(
            f"compatible range {compatible!r} does not include the pinned version "
            f"{installed.version}",
            path=source.path,
            field=f"{at}.compatible",
            value=compatible,
        )
    return {
        "module": spec.module,
        "version": installed.version,
        "requirement": spec.version,
        "compatible": compatible,
        "distribution": installed.distribution,
        "objects": [],  # the objects the model uses, and their sources: _pin_used_objects
        "sources": {},
        "source_sha256": sources_digest({}),
    }


def _pin_used_objects(
    source: ManifestSource, components: list[dict[str, Any]], config: Any, notes: list[str]
) -> None:
    """Record, per component, the objects the saved config uses and the sources defining them.

    The config is what ``load_bundle`` will read: an object no declared component covers would be
    refused there under every policy, so the build refuses it here, saying what to declare.
    """
    modules = [component["module"] for component in components]
    used: dict[str, list[UsedObject]] = {module: [] for module in modules}
    uncovered = []
    for listed in custom_objects_used(config):
        obj = _with_module(listed)
        if obj is None:
            continue  # a function name Keras itself provides
        owner = covering_component(obj.module, modules)
        if owner is None:
            uncovered.append(obj)
        else:
            used[owner].append(obj)
    if uncovered:
        first = uncovered[0]
        top = first.module.split(".", 1)[0]
        installed = imported_version(import_component(top))
        version = f'"{installed.version}"' if installed.version else '"<its version>"'
        others = [f"(also {o.name!r} from {o.module!r})" for o in uncovered[1:6]]
        raise BuildError(
            f"the model uses {first.name!r} from module {first.module!r}, which no component "
            "covers",
            path=source.path,
            field="components",
            value=first.module,
            details=[
                *others,
                "declare its package (a component covers its submodules too):",
                "  components:",
                f"    - module: {top}",
                f"      version: {version}",
            ],
        )
    for component in components:
        objects = used[component["module"]]
        if not objects:
            message = (
                f"component {component['module']!r} is declared, but the model uses none of its "
                "objects; it is still pinned and checked on load"
            )
            warnings.warn(message, BuildWarning, stacklevel=2)
            notes.append(f"warning: {message}")
            continue
        module = import_component(component["module"])
        installed = imported_version(module)
        resolved = [_resolve_object(obj) for obj in objects]
        table = {}
        if installed.origin is not None:
            base = package_base(installed.module, installed.origin)
            table = defining_sources(
                component["module"], [r for r in resolved if r is not None], base
            )
        component["objects"] = sorted({obj.name for obj in objects})
        component["sources"] = table
        component["source_sha256"] = sources_digest(table)


def _with_module(obj: UsedObject) -> UsedObject | None:
    """``obj`` with its module, for a registered function saved without one (see bundler.scan)."""
    if obj.module:
        return obj
    found = _resolve_object(obj)
    module = getattr(found, "__module__", None)
    if not isinstance(module, str) or module.split(".", 1)[0] in ("keras", "builtins"):
        return None
    return UsedObject(obj.name, obj.class_name, module)


def _resolve_object(obj: UsedObject) -> Any:
    """The Python object Keras will deserialize ``obj`` into, as this process has it."""
    import keras

    found = keras.saving.get_registered_object(obj.name)
    if found is None:
        try:
            found = getattr(importlib.import_module(obj.module), obj.class_name, None)
        except Exception:
            found = None
    return found


def _import_keras() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import keras
        import tensorflow  # noqa: F401 - export needs it; fail here with a clear message
    except ImportError as error:
        raise BuildError(f"building needs TensorFlow and Keras: {error}") from error
    return keras


def _resolve(factory: str, source: ManifestSource) -> Callable[..., Any]:
    module_name, _, attribute = factory.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise ManifestError(
            f"cannot import {module_name!r}: no module named {error.name!r} "
            "(add its folder to 'paths', or install it)",
            path=source.path,
            field="model.factory",
            value=factory,
        ) from error
    except Exception as error:
        raise BuildError(
            f"importing {module_name!r} failed: {type(error).__name__}: {error}",
            path=source.path,
            field="model.factory",
            value=factory,
        ) from error
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ManifestError(
                f"{module_name!r} has no attribute {attribute!r}",
                path=source.path,
                field="model.factory",
                value=factory,
            )
        target = getattr(target, part)
    if not callable(target):
        raise ManifestError(
            f"{factory!r} is not callable", path=source.path, field="model.factory", value=factory
        )
    return target  # type: ignore[no-any-return, unused-ignore]


def _make_model(source: ManifestSource, keras: Any) -> Any:
    spec = source.manifest.model
    factory = _resolve(spec.factory, source)
    try:
        model = factory(**spec.args)
    except TypeError as error:
        raise BuildError(
            f"calling {spec.factory} failed: {error}",
            path=source.path,
            field="model.args",
            value=spec.args,
        ) from error
    except Exception as error:
        raise BuildError(
            f"the model factory {spec.factory} raised {type(error).__name__}: {error}",
            path=source.path,
            field="model.factory",
        ) from error
    if not isinstance(model, keras.Model):
        raise BuildError(
            f"the model factory {spec.factory} returned {type(model).__name__}, not a keras.Model",
            path=source.path,
            field="model.factory",
        )
    if spec.weights:
        weights = source.root / spec.weights
        if not weights.is_file():
            raise ManifestError(
                "weights file does not exist",
                path=source.path,
                field="model.weights",
                value=spec.weights,
            )
        try:
            model.load_weights(weights)
        except Exception as error:
            raise BuildError(
                f"loading weights failed: {type(error).__name__}: {error}",
                path=source.path,
                field="model.weights",
                value=spec.weights,
            ) from error
    if not model.built or not getattr(model, "inputs", None):
        raise BuildError(
            "the model has no known inputs; build it in the factory (keras.Input, or call it on "
            "sample data) so that its SavedModel signature can be derived",
            path=source.path,
            field="model.factory",
        )
    return model


# -- lock helpers ---------------------------------------------------------------------------------


def files_table(
    workdir: Path,
    on_hashing: ProgressFactory | None = None,
    known: dict[str, FileDigest | OSError] | None = None,
) -> dict[str, dict[str, Any]]:
    """The files table of ``workdir``; ``known`` holds digests already taken of final files."""
    known = known or {}
    entries = walk_tree(workdir)
    odd = [entry.path for entry in entries if entry.kind not in ("file", "dir")]
    if odd:
        raise BuildError(f"the build produced entries that are not plain files: {odd}")
    paths = [entry.path for entry in entries if entry.kind == "file" and entry.path not in known]
    pending = sum(e.size for e in entries if e.kind == "file" and e.path not in known)
    with metered(on_hashing, pending) as meter:
        # each file is flushed by the task that hashed it, while other files are still hashing
        hashed = {**known, **hash_files(workdir, paths, progress=meter, then=fsync_path)}
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(hashed):
        result = hashed[path]
        if isinstance(result, OSError):
            raise BuildError(f"cannot read {path} just written: {result}")
        files[path] = {"size": result.size, "sha256": result.sha256}
        if result.shards:
            files[path]["shards"] = {"size": SHARD_SIZE, "sha256": list(result.shards)}
    return files


def _environment(keras: Any) -> dict[str, str]:
    import numpy as np
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "bundler": __version__,
        "platform": f"{sys.platform}-{platform.machine()}",
    }


def _created() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        try:
            moment = dt.datetime.fromtimestamp(int(epoch), tz=dt.timezone.utc)
        except (ValueError, OverflowError, OSError) as error:
            raise UsageError(
                "is not a whole number of seconds", field="SOURCE_DATE_EPOCH", value=epoch
            ) from error
    else:
        moment = dt.datetime.now(tz=dt.timezone.utc).replace(microsecond=0)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
