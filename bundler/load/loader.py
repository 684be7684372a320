"""Loading a bundle in a service: verify, plan, then the Keras model, an adapted one, or the graph.

``load_bundle`` is the public entry: it resolves a registry reference (``oci.pull``) or a folder,
checks a signature when given trusted keys, then reads and checks the lock and the files
(``load_integrity``: model.keras first, the rest hashed on another core while the model is built,
all of it settled before a model is returned). The plan (``compat``) says what to load with the
versions and code installed here, and the policy decides what happens when that fails:

- the Keras path (``keras_load``): the components the lock names are imported, the config is
  scanned, the archive bounded, the model built and its weights read in place; adapters rewrite
  the config (and weights) of an older bundle;
- the graph path (``graph_load``): ``saved_model/`` loaded with TensorFlow and called by its
  ``serving_default`` signature, no custom code imported; under ``fallback`` it serves what the
  plan, Keras or an adapter cannot load, with a FallbackWarning saying why. A hostile model is
  refused under every policy: a graph the scan refuses (``graph_scan``) refuses the bundle on
  the Keras path too, as ``bundle verify`` does, since other servers run that graph.

A component whose code changed under the same version (``modified``) loads only once its golden
examples replay within tolerance (``golden``).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bundler.compat.environments import ImportedEnvironment
from bundler.compat.plan import Plan, make_plan
from bundler.errors import (
    AdapterError,
    ExampleMismatchError,
    FallbackWarning,
    IncompatibleBundleError,
    LoadError,
    UnsafeBundleError,
)
from bundler.frameworks.installed import require_tensorflow
from bundler.load.golden import replay_examples
from bundler.load.graph import graph_predict, load_graph
from bundler.load.integrity import DeferredChecks, check_integrity
from bundler.load.keras import load_keras
from bundler.lock.model import Lock
from bundler.registry.reference import is_reference
from bundler.scans.graph import check_graph, lock_libraries
from bundler.types import Policy
from bundler.verify.lock_reader import bundle_root, pinned_digest

log = logging.getLogger("bundler")


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
            return graph_predict(self._signature, x)
        import keras
        import numpy as np

        outputs = self.model(x, training=False)
        # .numpy() on eager tensors: np.asarray on them warns under NumPy 2 (copy keyword)
        return keras.tree.map_structure(
            lambda t: t.numpy() if hasattr(t, "numpy") else np.asarray(t), outputs
        )


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
        from bundler.registry.api import pull

        path = pull(path).path  # into the content-addressed cache, verified there
    root = bundle_root(path)
    if trusted_keys is not None:
        from bundler.trust.signing import verify_signature

        verify_signature(root, trusted_keys)
    lock, deferred = check_integrity(root, verify, digest)
    try:
        return _load_verified(root, lock, deferred, policy, check_examples, unsafe)
    finally:
        if deferred is not None:
            deferred.close()


def _load_verified(
    root: Path,
    lock: Lock,
    deferred: DeferredChecks | None,
    policy: Policy,
    check_examples: bool,
    unsafe: bool,
) -> LoadedBundle:
    """load_bundle once the lock is read and checked, but for the ``deferred`` large files."""

    def settle() -> None:
        if deferred is not None:
            deferred.settle()

    plan = make_plan(lock, policy, ImportedEnvironment())
    for note in plan.notes:
        log.info("%s: %s", root, note)
    if plan.mode == "refused":
        raise IncompatibleBundleError(plan.refusal(), plan=plan, path=root)
    loaded: LoadedBundle
    if plan.mode == "keras":
        if not unsafe:  # a hostile graph refuses the bundle, as verify does, whichever path loads
            check_graph(
                root, lock.artifacts.saved_model, lock.files, lock_libraries(lock), unsafe=False
            )
        try:
            model, applied = load_keras(root, lock, plan, unsafe, deferred)
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


def _load_graph(root: Path, lock: Lock, plan: Plan, why: str, unsafe: bool) -> LoadedBundle:
    """The graph path (``graph_load``), with a FallbackWarning saying ``why`` it is served.

    The loaded bundle's plan says what was done: mode ``graph``, for that reason, even where the
    plan had expected the Keras path (a Keras failure, or examples that drifted).
    """
    graph, signature = load_graph(root, lock, unsafe)
    message = f"{root}: serving the SavedModel graph, not the full Keras model: {why}"
    if log.hasHandlers():  # a service that configured logging sees it there; a script, once
        log.warning(message)
    warnings.warn(message, FallbackWarning, stacklevel=3)
    if plan.mode != "graph":
        plan = replace(plan, mode="graph", reason=why)
    return LoadedBundle(root, graph, "graph", lock, plan, (), signature)
