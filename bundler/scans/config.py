"""The config safety scan: what a ``.keras`` file's ``config.json`` may name before Keras sees it.

Every serialized object (a dict with ``class_name`` and ``config``) must come from Keras itself or
from a module the lock names as a component (a component covers its submodules too). Where the
lock records where its objects are defined (``defined_in``), every object from outside Keras must
be one it records, from the module it records, and every recorded module must lie inside its
component (``check_recorded_objects``): the loader imports those modules and hands Keras what it
finds there. Keras 3 refuses to import other modules on its own, but a bundle must not depend on
which Keras release enforces what, so the scan is ours. ``read_config``, ``check_config_modules``
and ``check_recorded_objects`` need no TensorFlow: ``bundle verify`` runs them to predict what
``load_bundle`` would refuse. ``check_config_objects`` consults Keras's process-wide registry, so
only the loader runs it.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from bundler.errors import LoadError, UnsafeBundleError
from bundler.lock.model import LockedComponent

CONFIG_MAX_BYTES = 64 << 20
BUILTIN_MODULES = ("keras", "builtins")


def serialized_objects(node: Any) -> Iterator[dict[str, Any]]:
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            if isinstance(current.get("class_name"), str) and "config" in current:
                yield current
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)


def check_config_modules(
    config: Any, allowed: list[str], where: str, *, unsafe: bool = False
) -> None:
    """Refuse a config naming a module outside Keras and the lock's components, one of the known
    ways to make Keras itself load something from outside the model, or a lambda.

    Python lambdas are refused here, not left to whichever Keras release enforces ``safe_mode``
    how; ``unsafe=True`` (the caller made the bundle) lets them through.
    """
    check_known_keras_holes(config, where)
    for obj in serialized_objects(config):
        if obj["class_name"] == "__lambda__" and not unsafe:
            raise UnsafeBundleError(
                "the model contains a Lambda layer with Python bytecode, which safe_mode "
                "refuses; rebuild without Lambda, or load with unsafe=True if you made it",
                path=where,
            )
        module = obj.get("module")
        if module is None:
            continue
        if not isinstance(module, str):
            raise UnsafeBundleError(f"{obj['class_name']!r} has a non-string module", path=where)
        if module_allowed(module, allowed):
            continue
        raise UnsafeBundleError(
            f"the model config names module {module!r} (for {obj['class_name']!r}), which is not "
            f"a component in the lock ({', '.join(allowed) or 'none'}); refusing to load it",
            path=where,
        )


def module_allowed(module: str, allowed: list[str]) -> bool:
    top = module.split(".", 1)[0]
    return top in BUILTIN_MODULES or any(module == m or module.startswith(m + ".") for m in allowed)


@dataclass(frozen=True)
class UsedObject:
    """A serialized object from outside Keras: the name Keras looks it up by, and its module."""

    name: str
    class_name: str
    module: str


def custom_objects_used(config: Any) -> list[UsedObject]:
    """Every object the config names from outside Keras, once each, sorted.

    A registered function is saved as ``{"module": "builtins", "class_name": "function",
    "config": "acme>scaled_mse"}``: its module is only known once the registry resolves the name,
    so it is listed with ``module=""`` for the caller (the build) to resolve.
    """
    found: set[UsedObject] = set()
    for obj in serialized_objects(config):
        module = obj.get("module")
        class_name = obj["class_name"]
        if class_name == "function" and isinstance(obj.get("config"), str):
            if module == "builtins":
                found.add(UsedObject(obj["config"], obj["config"], ""))
                continue
            class_name = obj["config"]
        if not isinstance(module, str) or module.split(".", 1)[0] in BUILTIN_MODULES:
            continue
        registered = obj.get("registered_name")
        name = registered if isinstance(registered, str) and registered else class_name
        found.add(UsedObject(name, class_name, module))
    return sorted(found, key=lambda o: (o.module, o.name))


def check_lock_references(components: Sequence[LockedComponent], where: str) -> None:
    """Refuse a lock that records an object outside its component, or by a name that walks out of
    the module (``__class__``, ``__globals__``): load imports what the lock records."""
    for component in components:
        for name, reference in (component.defined_in or {}).items():
            module, _, qualname = reference.partition(":")
            dunder = [p for p in qualname.split(".") if p.startswith("__") and p.endswith("__")]
            if not module_allowed(module, [component.module]) or module.split(".")[0] in (
                BUILTIN_MODULES
            ):
                raise UnsafeBundleError(
                    f"the lock records {name!r} of component {component.module!r} in module "
                    f"{module!r}, which that component does not cover; refusing to load it",
                    path=where,
                )
            if dunder or not qualname:
                raise UnsafeBundleError(
                    f"the lock records {name!r} as {reference!r}, which is not a name defined in "
                    "that module; refusing to load it",
                    path=where,
                )


def check_recorded_objects(config: Any, components: Sequence[LockedComponent], where: str) -> None:
    """Refuse an object from outside Keras that the lock does not record where it is defined.

    Only components whose lock records ``defined_in`` are held to it: older locks are scanned by
    module, as before (``check_config_modules``).
    """
    check_lock_references(components, where)
    modules = [component.module for component in components]
    by_module = {component.module: component for component in components}
    for obj in custom_objects_used(config):
        owner = (
            covering_component(obj.module, modules)
            if obj.module
            else next((c for c in modules if obj.name in (by_module[c].defined_in or {})), None)
        )
        component = by_module.get(owner) if owner is not None else None
        if component is None or component.defined_in is None:
            continue  # an uncovered module is check_config_modules' refusal; old locks: by module
        reference = component.defined_in.get(obj.name)
        if reference is None or (obj.module and reference.partition(":")[0] != obj.module):
            recorded = (
                f"records it in {reference.partition(':')[0]!r}"
                if reference
                else ("does not record it")
            )
            raise UnsafeBundleError(
                f"the model config names {obj.name!r} from module {obj.module or '(registered)'!r}"
                f", but the lock {recorded} for component {component.module!r}; refusing to "
                "load it",
                path=where,
            )


def covering_component(module: str, components: list[str]) -> str | None:
    """The declared component covering ``module``: the longest that is it or a parent of it."""
    matches = [c for c in components if module == c or module.startswith(c + ".")]
    return max(matches, key=len) if matches else None


def open_keras_file(path: str | Path | BinaryIO, where: str | None = None) -> zipfile.ZipFile:
    """A ``.keras`` file opened as the zip it is, or a LoadError naming it (``where``)."""
    try:
        return zipfile.ZipFile(path)
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise LoadError(
            f"model.keras is not a readable .keras file: {error}", path=where or str(path)
        ) from error


def read_keras_config(path: str | Path | BinaryIO, where: str | None = None) -> dict[str, Any]:
    """``config.json`` of a ``.keras`` file (a path, or a file opened by the caller, named
    ``where`` in errors), read and bounded without TensorFlow."""
    with open_keras_file(path, where) as archive:
        return read_config(archive, where or str(path))


def registry_names(obj: dict[str, Any]) -> list[str]:
    """The names Keras looks up in its process-wide registry to deserialize ``obj``."""
    class_name = obj["class_name"]
    names = [class_name]
    if class_name == "function" and isinstance(obj.get("config"), str):
        names.append(obj["config"])
    registered = obj.get("registered_name", class_name)
    if isinstance(registered, str):
        names.append(registered)
    spec_name = obj.get("spec_name")
    if isinstance(spec_name, str):
        names.append(spec_name)
    return names


def check_config_objects(config: Any, allowed: list[str], where: str) -> None:
    """Refuse what Keras would resolve outside Keras and the lock's components.

    Keras resolves ``registered_name`` (and a function's name) in its process-wide registry
    *before* it looks at ``module``: any class another imported module registered would be
    instantiated, although the lock does not name that module. What is registered depends on what
    the loading process imported, so only the loader can run this check; ``bundle verify`` cannot.
    """
    import keras

    for obj in serialized_objects(config):
        for name in registry_names(obj):
            found = keras.saving.get_registered_object(name)
            if found is None:
                continue
            owner = getattr(found, "__module__", None) or ""
            if not module_allowed(owner, allowed):
                raise UnsafeBundleError(
                    f"the model config names {name!r}, registered by module {owner!r}, which is "
                    f"not a component in the lock ({', '.join(allowed) or 'none'}); refusing to "
                    "load it",
                    path=where,
                )


def read_config(archive: zipfile.ZipFile, where: str) -> dict[str, Any]:
    try:
        info = archive.getinfo("config.json")
    except KeyError:
        raise LoadError("model.keras has no config.json", path=where) from None
    if info.file_size > CONFIG_MAX_BYTES:
        raise UnsafeBundleError(f"config.json is larger than {CONFIG_MAX_BYTES} bytes", path=where)
    try:
        data = archive.read(info)
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as error:  # damaged, or changing
        raise LoadError(f"config.json cannot be read: {error}", path=where) from error
    try:
        config = json.loads(data)
    except (ValueError, RecursionError) as error:
        raise LoadError(f"config.json is not valid JSON: {error}", path=where) from error
    if not isinstance(config, dict):
        raise LoadError("config.json is not a JSON object", path=where)
    return config


# -- known Keras load holes ------------------------------------------------------------------------
# Each was closed by a Keras release (CVE-2025-1550, -8747, -9906, CVE-2026-1462, ...). A bundle
# must not be safe only on the releases that closed it: the same holes are refused here, before
# Keras sees the config, whichever Keras release is installed.

# Classes that, deserialized, load something from outside the model: refused by name, whatever
# module or registered name claims them.
OUTSIDE_LOADERS = {
    "TFSMLayer": "loads and runs a TensorFlow SavedModel from a path outside the bundle",
    "TorchModuleWrapper": "unpickles a torch module stored in the config (torch.load)",
}
# Config keys whose string value Keras opens as a file (StringLookup, IntegerLookup and
# TextVectorization read a vocabulary file; a bundle carries its vocabulary inside model.keras).
FILE_KEYS = {"vocabulary": "a vocabulary file"}
# The Keras namespaces a model's config may draw from: modeling objects only. Not keras.utils
# (get_file downloads), keras.config (enable_unsafe_deserialization turns safe_mode off),
# keras.saving or the functions of keras.models (load other models), keras.backend, datasets, ...
# Classes may also come from keras.utils: FeatureSpace is a layer exported there.
CLASS_NAMESPACES = frozenset(
    {
        *("activations", "constraints", "dtype_policies", "initializers", "layers", "losses"),
        *("metrics", "mixed_precision", "models", "ops", "optimizers", "quantizers", "random"),
        *("regularizers", "utils"),
    }
)
FUNCTION_NAMESPACES = frozenset(
    {
        *("activations", "constraints", "initializers", "losses", "metrics", "ops", "random"),
        "regularizers",
    }
)
# Functions of those namespaces that deserialize further configs rather than model anything.
NON_MODELING_FUNCTIONS = frozenset({"get", "serialize", "deserialize"})


def _keras_namespace(module: str) -> str | None:
    """``layers`` for ``keras.layers`` and ``keras.src.layers.core.dense``; None for ``keras``."""
    parts = module.split(".")
    if parts[1:2] == ["src"]:
        parts = parts[1:]
    return parts[1] if len(parts) > 1 else None


def check_known_keras_holes(config: Any, where: str) -> None:
    """Refuse what older Keras releases would let a config do: load a SavedModel or a pickle,
    open a file by path, or call a non-modeling function (Python's ``eval``, ``get_file``, ...)."""
    import builtins

    for obj in serialized_objects(config):
        class_name = obj["class_name"]
        names = {n for n in (class_name, obj.get("registered_name")) if isinstance(n, str)}
        for name in names & OUTSIDE_LOADERS.keys():
            raise UnsafeBundleError(
                f"the model config contains a {name} ({name} {OUTSIDE_LOADERS[name]}); a bundle "
                "must carry everything its model loads; refusing to load it",
                path=where,
            )
        inner = obj.get("config")
        if isinstance(inner, dict):
            for key, what in FILE_KEYS.items():
                value = inner.get(key)
                if isinstance(value, str):
                    raise UnsafeBundleError(
                        f"the model config's {class_name!r} names {what} by path in {key!r} "
                        f"({value!r}), which Keras would open outside the bundle; refusing to "
                        "load it",
                        path=where,
                    )
        module = obj.get("module")
        if not isinstance(module, str):
            continue
        is_function = class_name == "function"
        name = inner if is_function and isinstance(inner, str) else class_name
        if module == "builtins" and is_function and hasattr(builtins, str(name)):
            raise UnsafeBundleError(
                f"the model config names Python's built-in {name!r} as a function; older Keras "
                "releases would call it; refusing to load it",
                path=where,
            )
        if module.split(".", 1)[0] != "keras":
            continue
        namespace = _keras_namespace(module)
        if is_function:
            modeling = namespace in FUNCTION_NAMESPACES and name not in NON_MODELING_FUNCTIONS
        else:
            modeling = namespace is None or namespace in CLASS_NAMESPACES
        if modeling:
            continue
        kind, namespaces = (
            ("function", FUNCTION_NAMESPACES) if is_function else ("class", CLASS_NAMESPACES)
        )
        raise UnsafeBundleError(
            f"the model config names {module}.{name}, which is not a modeling {kind} (those "
            f"come from keras.{{{','.join(sorted(namespaces))}}}); refusing to load it",
            path=where,
        )
