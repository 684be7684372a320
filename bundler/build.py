"""Build: manifest -> temporary folder -> artifacts -> lock -> atomic rename into place.

A build is all or nothing. Everything is written into a folder beside OUT named
``.<out-name>.bundler-tmp.<pid>.<token>``, flushed to disk, and renamed to OUT in one step, so
OUT is only ever absent, the old complete bundle or the new complete bundle. A build that dies
(even by SIGKILL) leaves at most its recognisably named temporary folder, which the next build of
the same OUT removes once the process that made it is gone.

``--force`` swaps the new bundle in with ``renameat2(RENAME_EXCHANGE)`` where the kernel offers it
(one atomic step); elsewhere it renames the old bundle aside, then the new one in.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import errno
import importlib
import os
import platform
import re
import secrets
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .components import (
    defining_sources,
    import_component,
    imported_version,
    package_base,
    sources_digest,
)
from .digest import SHARD_SIZE, FileDigest, ProgressFactory, hash_files, metered, walk_tree
from .errors import (
    BuildError,
    BuildWarning,
    BundleError,
    ComponentError,
    ManifestError,
    UsageError,
)
from .keras_layout import align_weights
from .lock import FORMAT, LOCK_FILENAME, Lock, files_digest
from .manifest import ExampleSpec, Manifest, ManifestSource, read_manifest
from .scan import UsedObject, covering_component, custom_objects_used, read_keras_config
from .versions import caret_range, parse_range

KERAS_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
EXAMPLES_DIR = "examples"

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


def prepare_workdir(target: Path, force: bool) -> Path:
    """Check OUT, then create the temporary folder beside it that ``install`` renames to OUT."""
    _check_target(target, force)
    workdir = target.parent / f".{target.name}.bundler-tmp.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(target)
        workdir.mkdir()
    except OSError as error:  # a read-only or full file system, a missing permission
        raise BuildError(
            f"cannot create a temporary folder beside it: {error.strerror or error}", path=target
        ) from error
    return workdir


def _check_target(target: Path, force: bool) -> None:
    if not os.path.lexists(target):
        return
    if not force:
        raise UsageError("already exists; pass --force to replace it", path=target)
    if target.is_symlink() or not target.is_dir():
        raise UsageError("exists and is not a bundle folder; refusing to replace it", path=target)
    if any(target.iterdir()) and not (target / LOCK_FILENAME).is_file():
        raise UsageError(
            f"exists and is not a bundle (no {LOCK_FILENAME}); refusing to replace it",
            path=target,
        )


_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.bundler-(?:tmp|old)\.(?P<pid>\d+)\.[0-9a-f]+$")


def remove_stale_temporaries(target: Path, *, every_name: bool = False) -> list[Path]:
    """Remove temporary folders of earlier builds of ``target`` whose process no longer runs
    (``every_name``: beside ``target`` whatever they were for, as in the pull cache)."""
    removed: list[Path] = []
    try:
        siblings = list(target.parent.iterdir())
    except OSError:
        return removed
    for sibling in siblings:
        match = _TEMP_NAME.match(sibling.name)
        if not match or (match["name"] != target.name and not every_name):
            continue
        if _process_alive(int(match["pid"])):
            continue
        shutil.rmtree(sibling, ignore_errors=True)
        removed.append(sibling)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
    align_weights(workdir / KERAS_FILE)  # weights first and aligned: loads read them in place
    notes: list[str] = []
    _pin_used_objects(source, components, read_keras_config(workdir / KERAS_FILE), notes)
    # model.keras is final: hash (and flush) it on another core while TensorFlow exports, so
    # each file is hashed once, right after it is written, and the build waits for no extra pass
    with ThreadPoolExecutor(1, thread_name_prefix="bundler-early-hash") as early:
        keras_hashed = early.submit(hash_files, workdir, [KERAS_FILE], then=_fsync_path)
        stage("exporting saved_model/")
        _export_saved_model(model, workdir / SAVED_MODEL_DIR, source)
        examples = []
        if manifest.examples:
            stage("running golden examples")
            examples = [
                _run_example(model, source, index, workdir)
                for index in range(len(manifest.examples))
            ]
        elif manifest.examples is None:
            stage("generating a golden example")
            examples, note = _generate_example(model, workdir)
            notes.append(note)
    stage("hashing files")
    files = _hash_tree(workdir, on_hashing, known=keras_hashed.result())
    lock = Lock.model_validate(
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
    (workdir / LOCK_FILENAME).write_bytes(lock.to_json())
    return lock, model, notes


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


def _export_saved_model(model: Any, folder: Path, source: ManifestSource) -> None:
    try:
        with contextlib.redirect_stdout(sys.stderr):
            if not _export_single_copy(model, folder):
                model.export(str(folder), format="tf_saved_model", verbose=False)
    except Exception as error:
        raise BuildError(
            f"exporting the SavedModel failed: {type(error).__name__}: {error}",
            path=source.path,
            field="model.factory",
        ) from error


_COLLECTIONS = ("variables", "trainable_variables", "non_trainable_variables")


def _export_single_copy(model: Any, folder: Path) -> bool:
    """Export as ``model.export()`` does, but with each weight stored once; False if we cannot.

    On the TensorFlow backend ``model.export()`` tracks the Keras variables (``variables``) and,
    apart from them, the ``tf.Variable`` objects they wrap (``_all_variables``: what the serving
    function captures). TensorFlow deduplicates checkpoint entries by object, not by buffer, so
    every weight is written twice: a SavedModel twice the size of the weights, twice the export
    time, and twice the memory in every process that loads the graph (keras-team/keras#23553,
    open as of Keras 3.15). Registering the three collections with the wrapped ``tf.Variable``
    objects, through the public ``ExportArchive`` API, makes both references one object. The
    endpoint, its input signature and the tracked lookup tables are those of ``model.export()``;
    anything unexpected leaves the export to Keras.
    """
    import keras
    import tensorflow as tf

    try:  # the input signature model.export() derives from the model's inputs
        from keras.src.export.export_utils import get_input_signature
    except ImportError:
        return False
    if keras.backend.backend() != "tensorflow":
        return False
    collections = {name: [v.value for v in getattr(model, name)] for name in _COLLECTIONS}
    if not all(isinstance(v, tf.Variable) for vs in collections.values() for v in vs):
        return False
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", model.__call__, get_input_signature(model))
    for name, variables in collections.items():
        archive.add_variable_collection(name, variables)
    archive.write_out(str(folder), verbose=False)
    return True


# -- golden examples ------------------------------------------------------------------------------


def example_inputs(spec: ExampleSpec, model: Any, root: Path, where: str) -> dict[str, Any]:
    """An example's inputs as {model input name: float array}, whatever form the manifest used."""
    import numpy as np

    names = [tensor.name.split(":")[0] for tensor in model.inputs]
    if isinstance(spec.inputs, str):
        path = root / spec.inputs
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files}
        except (OSError, ValueError) as error:
            raise ManifestError(
                f"cannot read example inputs: {error}",
                path=where,
                field="inputs",
                value=spec.inputs,
            ) from error
        if len(arrays) == 1 and len(names) == 1:
            arrays = {names[0]: next(iter(arrays.values()))}
    elif isinstance(spec.inputs, dict):
        arrays = dict(spec.inputs)
    else:
        if len(names) != 1:
            raise ManifestError(
                f"the model has {len(names)} inputs {names}; give inputs as a mapping by name",
                path=where,
                field="inputs",
            )
        arrays = {names[0]: spec.inputs}
    if sorted(arrays) != sorted(names):
        raise ManifestError(
            f"inputs are named {sorted(arrays)}, the model's inputs are {names}",
            path=where,
            field="inputs",
        )
    dtypes = {tensor.name.split(":")[0]: tensor.dtype for tensor in model.inputs}
    try:
        return {key: np.asarray(value, dtype=str(dtypes[key])) for key, value in arrays.items()}
    except (TypeError, ValueError) as error:
        raise ManifestError(
            f"inputs are not a numeric array: {error}", path=where, field="inputs"
        ) from error


def outputs_as_arrays(outputs: Any) -> dict[str, Any]:
    """Model outputs (a tensor, a list or a dict of them) as {name: numpy array}."""
    import numpy as np

    if isinstance(outputs, dict):
        return {str(key): np.asarray(value) for key, value in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return {f"output_{index}": np.asarray(value) for index, value in enumerate(outputs)}
    return {"output_0": np.asarray(outputs)}


def _run_example(model: Any, source: ManifestSource, index: int, workdir: Path) -> dict[str, Any]:
    assert source.manifest.examples is not None
    spec = source.manifest.examples[index]
    where = f"{source.path}: examples[{index}]"
    inputs = example_inputs(spec, model, source.root, where)
    try:
        return _record_example(model, spec.name, inputs, spec.rtol, spec.atol, workdir)
    except Exception as error:
        raise BuildError(
            f"running example {spec.name!r} failed: {type(error).__name__}: {error}",
            path=source.path,
            field=f"examples[{index}]",
        ) from error


def _record_example(
    model: Any, name: str, inputs: dict[str, Any], rtol: float, atol: float, workdir: Path
) -> dict[str, Any]:
    """Run ``inputs`` through the model and store both as the golden example ``name``."""
    import numpy as np

    feed = inputs if len(inputs) > 1 else next(iter(inputs.values()))
    outputs = outputs_as_arrays(model(feed, training=False))
    inputs_rel = f"{EXAMPLES_DIR}/{name}.inputs.npz"
    outputs_rel = f"{EXAMPLES_DIR}/{name}.outputs.npz"
    (workdir / EXAMPLES_DIR).mkdir(exist_ok=True)
    np.savez(workdir / inputs_rel, **inputs)
    np.savez(workdir / outputs_rel, **outputs)
    return {"name": name, "inputs": inputs_rel, "outputs": outputs_rel, "rtol": rtol, "atol": atol}


GENERATED_EXAMPLE = "generated"
GENERATED_SEED = 0
GENERATED_TOLERANCE = (1.0e-4, 1.0e-5)  # rtol, atol: other CPUs round float32 differently


def generated_inputs(model: Any) -> dict[str, Any]:
    """Inputs made from the model's input spec: batch 2, unknown sizes 4, seeded values.

    Floats are standard normal, integers 0 or 1 (valid indices for any embedding), booleans
    random, strings a fixed word. Enough to notice code that computes something else.
    """
    import numpy as np

    rng = np.random.default_rng(GENERATED_SEED)
    arrays: dict[str, Any] = {}
    for tensor in model.inputs:
        name = tensor.name.split(":")[0]
        shape = tuple(
            2 if i == 0 and d is None else (4 if d is None else int(d))
            for i, d in enumerate(tensor.shape)
        )
        dtype = str(tensor.dtype)
        if dtype.startswith(("float", "bfloat")):
            arrays[name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.startswith(("int", "uint")):
            arrays[name] = rng.integers(0, 2, size=shape).astype(dtype)
        elif dtype == "bool":
            arrays[name] = rng.random(shape) < 0.5
        elif dtype == "string":
            arrays[name] = np.full(shape, "bundler", dtype=object).astype(str)
        else:
            raise ValueError(f"input {name!r} has dtype {dtype}, which cannot be generated")
    return arrays


def _generate_example(model: Any, workdir: Path) -> tuple[list[dict[str, Any]], str]:
    """The generated golden example, and the line the build reports about it."""
    try:
        inputs = generated_inputs(model)
        entry = _record_example(model, GENERATED_EXAMPLE, inputs, *GENERATED_TOLERANCE, workdir)
    except Exception as error:
        shutil.rmtree(workdir / EXAMPLES_DIR, ignore_errors=True)
        message = (
            f"no golden example: generating one from the input spec failed "
            f"({type(error).__name__}: {error}); declare 'examples' in the manifest, so that "
            "loads of changed code can be checked"
        )
        warnings.warn(message, BuildWarning, stacklevel=2)
        return [], message
    return [entry], (
        f"golden example {GENERATED_EXAMPLE!r} generated from the model's input spec (seed "
        f"{GENERATED_SEED}); declare 'examples' to choose inputs, or 'examples: []' to opt out"
    )


# -- lock helpers ---------------------------------------------------------------------------------


def _hash_tree(
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
        hashed = {**known, **hash_files(workdir, paths, progress=meter, then=_fsync_path)}
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


# -- durability and installation ------------------------------------------------------------------


def _fsync_path(path: Path, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _sync_tree(root: Path) -> None:
    """Flush every file and folder of the new bundle before it is renamed into place."""
    for folder, _, names in os.walk(root):
        for name in names:
            _fsync_path(Path(folder) / name)
        _fsync_path(Path(folder), directory=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(first: Path, second: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False where the system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    result = renameat2(
        _AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE
    )
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(second))


def install(workdir: Path, target: Path, force: bool, what: str = "build") -> None:
    """Flush ``workdir`` and rename it to ``target`` (swapped in atomically with ``force``)."""
    _sync_tree(workdir)
    try:
        if force and os.path.lexists(target):
            if _exchange(workdir, target):
                shutil.rmtree(workdir, ignore_errors=True)  # now holds the old bundle
            else:
                aside = (
                    target.parent
                    / f".{target.name}.bundler-old.{os.getpid()}.{secrets.token_hex(4)}"
                )
                os.rename(target, aside)
                os.rename(workdir, target)
                shutil.rmtree(aside, ignore_errors=True)
        else:
            os.rename(workdir, target)
    except OSError as error:
        if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise BuildError(
                f"another {what} created it while this one ran; pass --force to replace it",
                path=target,
            ) from error
        raise BuildError(
            f"cannot move the bundle into place: {error.strerror}", path=target
        ) from error
    _fsync_path(target.parent, directory=True)


def describe_failure(error: BaseException) -> BundleError:
    """Any exception from a build as a BundleError (for callers that must not see tracebacks)."""
    if isinstance(error, BundleError):
        return error
    if isinstance(error, OSError):
        return BuildError(f"{error.strerror or error}", path=error.filename)
    return BuildError(f"{type(error).__name__}: {error}")
