"""Loading a bundle in a service: verify, plan, then the Keras model, an adapted one, or the graph.

The Keras path imports exactly the component modules the lock names, and before Keras sees the
config it is scanned: every serialized object must come from Keras itself or from one of those
modules. Keras 3 refuses to import other modules on its own, but a bundle must not depend on which
Keras release enforces what. ``safe_mode`` stays on, so Lambda bytecode is refused.

A ``model.keras`` laid out by the build (``keras_layout``: weights first, stored, at 4096) has its
weights read where they lie: the model is built from the config and HDF5 opens ``model.keras``
itself, read-only, through one guarded seam over Keras's private saving steps (``keras_seam``);
any other layout, or a Keras release without that seam, goes through Keras's own loader. Adapted
loads use the adapted config the same way; adapters that migrate weights rewrite the zip in
memory and hand it to Keras's loader. Before Keras reads the archive, its members' sizes and its
HDF5 weights are checked (``keras_archive``). A verified load of a sharded ``model.keras`` reads
it through ``digest.VerifiedFile``, each shard checked before it is parsed, and hashes the
weights' shards on another core while the model is built: they are waited for before the
weights are read, and a mismatch is an IntegrityError, the model never returned. Either way the
model's variables are not filled by their initialisers only to be overwritten by the weights
(``keras_seam.variables_from_weights``): those the weights do not set get their initialiser's value.

The graph path loads ``saved_model/`` with ``tf.saved_model.load`` and calls its
``serving_default`` signature; it needs no custom code, and is served only when every op in it is
one Keras exports contain (``graph_scan``).

Keras deserialization is guarded by one lock: services load from many threads, and Keras's
registries and naming counters are process-wide.
"""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import warnings
import zipfile
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .compat import Plan, make_plan
from .components import import_component, registered_objects
from .digest import ShardMismatch, VerifiedFile, check_digests
from .environments import ImportedEnvironment
from .errors import (
    AdapterError,
    BundleError,
    ExampleMismatchError,
    FallbackWarning,
    IncompatibleBundleError,
    IntegrityError,
    LoadError,
    UnsafeBundleError,
    UnsafeLoadWarning,
)
from .frameworks import require_tensorflow
from .golden import replay_examples
from .graph_scan import check_graph
from .keras_archive import WEIGHTS_MEMBER, check_archive, check_weights
from .keras_layout import weights_offset
from .lock import LOCK_FILENAME, FileEntry, Lock
from .oci import is_reference
from .problems import Problem
from .scan import check_config_modules, check_config_objects, read_config
from .types import Policy, ProblemKind
from .verify import (
    bundle_root,
    check_artifacts,
    check_files,
    pin_problem,
    pinned_digest,
    read_lock,
)

log = logging.getLogger("bundler")

_keras_lock = threading.RLock()


@dataclass(frozen=True, eq=False)
class LoadedBundle:
    """A loaded bundle: the model, how it was loaded, and what the bundle says about itself."""

    path: Path
    model: Any
    mode: str  # "keras" or "graph"
    lock: Lock
    compatibility: Plan
    adaptations: tuple[str, ...] = ()
    _signature: Any = field(default=None, repr=False)

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self.lock.metadata)

    @property
    def digest(self) -> str:
        return self.lock.digest

    def predict(self, x: Any) -> Any:
        """Run the model on ``x`` (an array, or a dict by input name); returns numpy."""
        if self.mode == "graph":
            return _graph_predict(self._signature, x)
        import keras
        import numpy as np

        outputs = self.model(x, training=False)
        # .numpy() on eager tensors: np.asarray on them warns under NumPy 2 (copy keyword)
        return keras.tree.map_structure(
            lambda t: t.numpy() if hasattr(t, "numpy") else np.asarray(t), outputs
        )


def _integrity(
    root: Path, verify: bool, digest: str | None = None
) -> tuple[Lock, _Deferred | None]:
    """The validated lock, every file checked against it when ``verify``. Only model.keras is
    checked now, and only when it has no shard digests; the rest is left to the returned
    ``_Deferred``, checked while (and before) it is used: the Keras path never reads the other
    files, so they are hashed on another core while the model is built."""
    lock, problems = read_lock(root)
    if (pinned := pin_problem(lock, digest)) is not None:
        raise IntegrityError(pinned.message, path=root / LOCK_FILENAME)
    deferred = None
    if lock is not None:
        problems += check_artifacts(lock)
        if verify:
            files = lock.files
            keras = lock.artifacts.keras
            later = set() if problems else {n for n in files if n != keras}
            if keras in files and files[keras].shards is not None and not problems:
                later.add(keras)
            problems += check_files(root, files, defer=later)[0]
            if later and not problems:
                reader = None
                try:
                    if keras in later:
                        entry = files[keras]
                        shards = entry.shards
                        assert shards is not None
                        reader = VerifiedFile(
                            root / keras, entry.size, shards.size, list(shards.sha256)
                        )
                except (OSError, ValueError) as error:
                    problems.append(Problem(keras, "unreadable", f"cannot be read: {error}"))
                else:
                    others = {name: files[name] for name in later if name != keras}
                    deferred = _Deferred(root, keras, reader, others)
                    deferred.prefetch()
    if problems:
        raise _failed(root, problems)
    assert lock is not None
    return lock, deferred


def _failed(root: Path, problems: list[Problem]) -> IntegrityError:
    return IntegrityError(
        f"the bundle failed verification ({len(problems)} problem"
        f"{'s' if len(problems) > 1 else ''}); refusing to load it",
        path=root,
        details=[str(p) for p in problems],
    )


class _Deferred:
    """The files a verified load checks while it works rather than before.

    A sharded model.keras is read through ``reader``, which checks each shard before its bytes are
    parsed; ``start`` then hashes, on a thread, the shards nobody read (the weights) and, after
    them, every other file (the SavedModel and the examples, which the Keras path never reads). The
    loader waits for the first before it reads the weights (``weights``) and for all before it
    returns a model or serves the graph (``settle``); any mismatch is an IntegrityError.
    """

    def __init__(
        self,
        root: Path,
        keras: str,
        reader: VerifiedFile | None,
        others: dict[str, FileEntry],
    ) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.root, self.keras, self.reader, self.others = root, keras, reader, others
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="bundler-verify")
        self._weights: Future[None] | None = None
        self._rest: Future[dict[str, tuple[ProblemKind, str] | None]] | None = None

    def prefetch(self) -> None:
        """Verify, meanwhile, the shards a loader reads first: the zip's directory and config at
        the end of model.keras, its first header at the start."""
        if self.reader is not None:
            last = len(self.reader.unchecked()) - 1
            self._pool.submit(self.reader.check, sorted({0, last}), 2)

    def start(self) -> None:
        if self._weights is None:
            check = self.reader.check_rest if self.reader is not None else (lambda: None)
            self._weights = self._pool.submit(check)
            self._rest = self._pool.submit(check_digests, self.root, self.others)

    def failed(self) -> bool:
        return self.reader is not None and self.reader.failure is not None

    def weights(self) -> None:
        self.start()
        assert self._weights is not None
        try:
            self._weights.result()
        except (ShardMismatch, OSError) as error:
            why = (self.reader.failure if self.reader else None) or f"cannot be read: {error}"
            raise _failed(self.root, [Problem(self.keras, "changed", why)]) from None

    def settle(self) -> None:
        self.weights()
        assert self._rest is not None
        verdicts = self._rest.result()
        problems = [Problem(name, *v) for name, v in sorted(verdicts.items()) if v is not None]
        if problems:
            raise _failed(self.root, problems)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self.reader is not None:
            self.reader.close()


def load_bundle(
    path: str | Path,
    *,
    policy: Policy = "adapt",
    verify: bool = True,
    check_examples: bool = False,
    trusted_keys: Any = None,
    unsafe: bool = False,
    digest: str | None = None,
) -> LoadedBundle:
    """Load a bundle for inference or further training. See the module docstring for the paths.

    ``verify=False`` skips hashing the files (the lock is still read and validated);
    ``check_examples=True`` replays the golden examples through the chosen path;
    ``unsafe=True`` turns Keras safe_mode off (Lambda bytecode runs) and serves a SavedModel graph
    the graph scan refuses: only for bundles you made;
    ``digest="sha256:..."`` refuses any other bundle, signed or not (substitution, rollback).
    """
    require_tensorflow("loading a bundle")
    digest = pinned_digest(digest)
    if is_reference(path):
        from .oci import pull

        path = pull(path).path  # into the content-addressed cache, verified there
    root = bundle_root(path)
    if trusted_keys is not None:
        from .signing import verify_signature

        verify_signature(root, trusted_keys)
    lock, deferred = _integrity(root, verify, digest)
    try:
        return _load_verified(root, lock, deferred, policy, check_examples, unsafe)
    finally:
        if deferred is not None:
            deferred.close()


def _load_verified(
    root: Path,
    lock: Lock,
    deferred: _Deferred | None,
    policy: Policy,
    check_examples: bool,
    unsafe: bool,
) -> LoadedBundle:
    """load_bundle once the lock is read and checked, but for the ``deferred`` large files."""

    def settle() -> None:
        if deferred is not None:
            deferred.settle()

    plan = make_plan(lock, policy, ImportedEnvironment())
    if plan.mode == "refused":
        raise IncompatibleBundleError(plan.refusal(), plan=plan, path=root)
    loaded: LoadedBundle
    if plan.mode == "keras":
        try:
            model, applied = _load_keras(root, lock, plan, unsafe, deferred)
            loaded = LoadedBundle(root, model, "keras", lock, plan, tuple(applied))
        except (LoadError, AdapterError, UnsafeBundleError) as error:
            # a hostile model is refused outright; a model Keras or an adapter cannot load is
            # served as the graph under 'fallback', with a warning that says why
            if policy != "fallback" or isinstance(error, UnsafeBundleError):
                raise
            why = f"the Keras model could not be loaded: {error}"
            settle()
            loaded = _load_graph(root, lock, plan, why, unsafe)
        if plan.replay and loaded.mode == "keras":
            settle()  # the examples are read from the bundle
            loaded = _prove_modified(loaded, policy, unsafe)
            check_examples = check_examples and loaded.mode != "keras"  # just replayed
    else:
        settle()
        loaded = _load_graph(root, lock, plan, plan.reason, unsafe)
    settle()  # never return a model before every file is verified
    if check_examples:
        _, problems = replay_examples(loaded)
        if problems:
            raise ExampleMismatchError(
                "golden examples drifted", path=root, details=[str(p) for p in problems]
            )
    return loaded


def _prove_modified(loaded: LoadedBundle, policy: Policy, unsafe: bool) -> LoadedBundle:
    """A component's code changed under the same version: load only what replays the same."""
    _, problems = replay_examples(loaded)
    if not problems:
        return loaded
    changed = ", ".join(
        f"{c.name} {c.installed}" for c in loaded.compatibility.checks if c.status == "modified"
    )
    why = (
        f"the code of {changed} differs from the build's under the same version, and the golden "
        "examples drifted"
    )
    details = [str(p) for p in problems]
    if policy == "fallback":
        why = f"{why}: {details[0]}"
        return _load_graph(loaded.path, loaded.lock, loaded.compatibility, why, unsafe)
    raise ExampleMismatchError(
        f"{why}; refusing to load it (policy '{policy}')", path=loaded.path, details=details
    )


# -- the Keras path -------------------------------------------------------------------------------


def _rewritten(archive: zipfile.ZipFile, config: dict[str, Any], edits: list[Any]) -> io.BytesIO:
    """The .keras archive in memory, with the adapted config and, if adapters say so, weights."""
    from .adapters import apply_to_weights

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

    def __init__(self, path: str) -> None:
        super().__init__(io.FileIO(path, "rb"), buffer_size=1 << 20)

    @property
    def name(self) -> str:
        import tempfile

        return os.path.join(tempfile.gettempdir(), "model.keras")


def _load_keras(
    root: Path, lock: Lock, plan: Plan, unsafe: bool, deferred: _Deferred | None = None
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
    custom_objects: dict[str, Any] = {}
    for component in lock.components:
        custom_objects.update(registered_objects(import_component(component.module)))
    if unsafe:
        message = f"loading {root} with Keras safe_mode OFF: code inside the model will run"
        log.warning(message)
        warnings.warn(message, UnsafeLoadWarning, stacklevel=3)
    try:
        archive = zipfile.ZipFile(reader if reader is not None else where)
    except (ShardMismatch, OSError, zipfile.BadZipFile) as error:
        if deferred is not None and deferred.failed():
            deferred.weights()  # raises the IntegrityError
        raise LoadError(
            f"model.keras is not a readable .keras file: {error}", path=where
        ) from error
    with archive:
        try:
            return _load_keras_archive(
                root, lock, plan, unsafe, deferred, archive, modules, custom_objects
            )
        except Exception:
            if deferred is not None and deferred.failed():
                deferred.weights()  # raises the IntegrityError
            raise


def _load_keras_archive(
    root: Path,
    lock: Lock,
    plan: Plan,
    unsafe: bool,
    deferred: _Deferred | None,
    archive: zipfile.ZipFile,
    modules: list[str],
    custom_objects: dict[str, Any],
) -> tuple[Any, list[str]]:
    from . import keras_seam

    keras_name = lock.artifacts.keras
    where = str(root / keras_name)
    reader = deferred.reader if deferred is not None else None
    config = read_config(archive, where)
    check_config_modules(config, modules, where, unsafe=unsafe)
    check_config_objects(config, modules, where)
    size = lock.files[keras_name].size
    if reader is None:
        check_archive(archive, size, where)  # before Keras reads
    else:  # the weights' HDF5 is walked once its bytes are verified (in ``verified`` below)
        check_archive(archive, size, where, weights=False)
    applied: list[str] = []
    edits: list[Any] = []
    if plan.adapters:
        from .adapters import apply_to_config

        config, applied, edits = apply_to_config(config, plan.adapters)
    not_in_place = _in_place_reason(archive, reader, where, edits)
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

    with _keras_lock, keras_seam.variables_from_weights():
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
                source = _rewritten(archive, config, edits) if plan.adapters else _KerasFile(where)
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
            if len(text) > 600:
                text = text[:597] + "..."
            raise LoadError(f"Keras could not load the model: {text}", path=where) from error
    return model, applied


def _in_place_reason(
    archive: zipfile.ZipFile, reader: VerifiedFile | None, where: str, edits: list[Any]
) -> str | None:
    """Why the weights cannot be read in place from this archive, or None when they can."""
    if edits:
        return "adapters migrate the weights, which needs a rewritten copy"
    if not set(archive.namelist()) <= {"config.json", "metadata.json", WEIGHTS_MEMBER}:
        return "the archive holds assets"
    if weights_offset(reader if reader is not None else where) is None:
        return "model.keras is not laid out for reading in place (built by an older bundler?)"
    return None


# -- the graph path -------------------------------------------------------------------------------


def _load_graph(root: Path, lock: Lock, plan: Plan, why: str, unsafe: bool) -> LoadedBundle:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    check_graph(root, lock.artifacts.saved_model, lock.files, unsafe=unsafe)  # before TF reads it
    import tensorflow as tf

    folder = root / lock.artifacts.saved_model
    with _keras_lock:
        try:
            graph = tf.saved_model.load(str(folder))
        except Exception as error:
            raise LoadError(
                f"the SavedModel could not be loaded either: {type(error).__name__}: {error}",
                path=folder,
            ) from error
    signature = graph.signatures.get("serving_default")
    if signature is None:
        raise LoadError("the SavedModel has no serving_default signature", path=folder)
    message = f"{root}: serving the SavedModel graph, not the full Keras model: {why}"
    if log.hasHandlers():  # a service that configured logging sees it there; a script, once
        log.warning(message)
    warnings.warn(message, FallbackWarning, stacklevel=3)
    return LoadedBundle(root, graph, "graph", lock, plan, (), signature)


def _graph_predict(signature: Any, x: Any) -> Any:
    import numpy as np
    import tensorflow as tf

    specs = signature.structured_input_signature[1]
    if isinstance(x, dict):
        feed = dict(x)
    elif len(specs) == 1:
        feed = {next(iter(specs)): x}
    elif isinstance(x, (list, tuple)) and len(x) == len(specs):
        feed = dict(zip(specs, x, strict=False))  # positional inputs, in the model's input order
    else:
        raise LoadError(f"the model takes inputs {sorted(specs)}; pass a dict by name")
    missing = set(specs) - set(feed)
    if missing:
        raise LoadError(f"missing inputs {sorted(missing)}; the model takes {sorted(specs)}")
    tensors = {
        name: tf.convert_to_tensor(np.asarray(value), dtype=specs[name].dtype)
        for name, value in feed.items()
    }
    outputs = {key: value.numpy() for key, value in signature(**tensors).items()}
    names = sorted(outputs, key=lambda k: (len(k), k))
    if all(name.startswith("output_") and name[7:].isdigit() for name in names):
        ordered = [outputs[name] for name in names]
        return ordered[0] if len(ordered) == 1 else ordered
    return outputs
