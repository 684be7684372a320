"""What a bundle pins of each component: its version, the objects the model uses, their sources.

At build time each component the manifest declares is imported and its installed version checked
against the manifest's ``version`` range (``pin_component``); the lock records that version, the
requirement and the ``compatible`` range load accepts (a caret range by default). Once Keras has
saved the model, ``pin_used_objects`` reads the saved config, the one ``load_bundle`` will read:
every custom object in it must be covered by a declared component, or the build is refused there and
says what to declare (load would refuse it under every policy). Per component the lock then lists
the objects the config uses, where each is defined (``defined_in``, the modules load imports to find
them: ``bundler.load.object_locations``), and the files of the code the model runs
(``bundler.build.model_sources``: the live model's object graph, sublayers made in constructors
included), hashed by their Python tokens (``bundler.compat.source_hash``): what load and verify
compare to tell a ``modified`` component. An object no other process could find (defined inside a
function, or under a name that leads elsewhere) is refused here, as are two objects saved under one
name: Keras finds objects by name.
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path
from typing import Any

from bundler.build.model_sources import code_objects, defining_files
from bundler.compat.components import (
    import_component,
    imported_version,
    package_base,
    pin_sources,
    sources_digest,
)
from bundler.compat.source_hash import TOKENS_V1
from bundler.errors import BuildError, BuildWarning, ComponentError
from bundler.load.object_locations import reference_of
from bundler.manifest.reader import ManifestSource
from bundler.scans.config import UsedObject, covering_component, custom_objects_used
from bundler.versions.ranges import caret_range, parse_range


def pin_component(source: ManifestSource, index: int) -> dict[str, Any]:
    """The lock's entry for the manifest's ``components[index]``, imported and its installed
    version checked against the manifest's ranges; its objects are filled in later."""
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
        "objects": [],  # the objects the model uses, and their sources: pin_used_objects
        "defined_in": {},
        "sources": {},
        "source_sha256": sources_digest({}),
        "source_hash": TOKENS_V1,
        "source_bytes": {},
    }


def pin_used_objects(
    source: ManifestSource,
    components: list[dict[str, Any]],
    config: Any,
    notes: list[str],
    model: Any = None,
) -> None:
    """Record, per component, the objects the saved config uses and the sources of the code the
    model runs (``model``, the live model just saved: ``bundler.build.model_sources``).

    The config is what ``load_bundle`` will read: an object no declared component covers would be
    refused there under every policy, so the build refuses it here, saying what to declare.
    """
    modules = [component["module"] for component in components]
    used: dict[str, list[UsedObject]] = {module: [] for module in modules}
    uncovered = []
    for listed in custom_objects_used(config):
        obj = _with_module(listed, modules, source)
        if obj is None:
            continue  # a function name Keras itself provides
        owner = covering_component(obj.module, modules)
        if owner is None:
            uncovered.append(obj)
        else:
            used[owner].append(obj)
    if uncovered:
        first = uncovered[0]
        others = [f"(also {o.name!r} from {o.module!r})" for o in uncovered[1:6]]
        declare = []
        for top in dict.fromkeys(obj.module.split(".", 1)[0] for obj in uncovered):
            installed = imported_version(import_component(top))
            version = f'"{installed.version}"' if installed.version else '"<its version>"'
            declare += [f"    - module: {top}", f"      version: {version}"]
        raise BuildError(
            f"the model uses {first.name!r} from module {first.module!r}, which no component "
            "covers",
            path=source.path,
            field="components",
            value=first.module,
            details=[
                *others,
                "declare its package (a component covers its submodules too):"
                if len(declare) == 2
                else "declare their packages (a component covers its submodules too):",
                "  components:",
                *declare,
            ],
        )
    graph = code_objects(model, modules) if model is not None else []
    for component in components:
        objects = used[component["module"]]
        resolved = [_resolve_object(obj) for obj in objects]
        files = _code_files(component["module"], resolved, graph)
        if not objects and not files:
            message = (
                f"component {component['module']!r} is declared, but the model uses none of its "
                "objects; it is still pinned and checked on load"
            )
            warnings.warn(message, BuildWarning, stacklevel=2)
            notes.append(f"warning: {message}")
            continue
        pinned = pin_sources(files)
        for rel, why in pinned.untokenizable.items():
            notes.append(
                f"{component['module']}: {rel} is not Python the tokenizer reads ({why}); "
                "it is pinned by its bytes, so any edit to it counts as a change"
            )
        component["objects"] = sorted({obj.name for obj in objects})
        component["defined_in"] = _defined_in(source, component["module"], objects, resolved)
        component["sources"] = pinned.sources
        component["source_bytes"] = pinned.source_bytes
        component["source_sha256"] = pinned.source_sha256


def _code_files(module: str, resolved: list[Any], graph: list[Any]) -> dict[str, Path]:
    """The files of component ``module`` that hold code the model runs: the config's objects
    (``resolved``, None where this process cannot find one) and the model's object graph (see
    bundler.build.model_sources)."""
    installed = imported_version(import_component(module))
    if installed.origin is None:
        return {}
    found = [r for r in resolved if r is not None]
    return defining_files(module, [*found, *graph], package_base(module, installed.origin))


def _defined_in(
    source: ManifestSource, component: str, objects: list[UsedObject], resolved: list[Any]
) -> dict[str, str]:
    """{registered name: "module:qualname"} of the component's used objects (object_locations).

    Refuses what load could not find again: an object this process cannot resolve, one defined
    where no other process can import it, and two objects saved under one name.
    """
    defined_in: dict[str, str] = {}
    for obj, found in zip(objects, resolved, strict=True):
        try:
            if found is None:
                raise ValueError(f"this process cannot find it in module {obj.module!r}")
            reference = reference_of(found)
        except ValueError as error:
            raise BuildError(
                f"the model uses {obj.name!r} of component {component!r}, but load could not find "
                f"it again: {error}",
                path=source.path,
                field="components",
                value=obj.name,
            ) from None
        if defined_in.setdefault(obj.name, reference) != reference:
            raise BuildError(
                f"the model uses two objects saved under the name {obj.name!r} "
                f"({defined_in[obj.name]} and {reference}); Keras finds objects by that name, "
                "so it cannot tell them apart: register them under distinct names "
                "(@keras.saving.register_keras_serializable(package=...))",
                path=source.path,
                field="components",
                value=obj.name,
            )
    return dict(sorted(defined_in.items()))


def _with_module(
    obj: UsedObject, components: list[str], source: ManifestSource
) -> UsedObject | None:
    """``obj`` with its module, for a function saved without one (see bundler.scans.config):
    registered,
    or, unregistered, the one function of that name a component's imported modules define."""
    if obj.module:
        return obj
    found = _resolve_object(obj)
    if found is None:
        found = _unregistered_function(obj.name, components, source)
    module = getattr(found, "__module__", None)
    if not isinstance(module, str) or module.split(".", 1)[0] in ("keras", "builtins"):
        return None
    return UsedObject(obj.name, obj.class_name, module)


# Where Keras looks up a function saved by its bare name (serialization_lib.BUILTIN_MODULES).
KERAS_FUNCTION_NAMESPACES = (
    *("activations", "constraints", "initializers", "losses", "metrics", "optimizers"),
    "regularizers",
)


def _unregistered_function(name: str, components: list[str], source: ManifestSource) -> Any:
    """The function Keras saved as ``{"module": "builtins", "config": name}``: an unregistered
    one (Keras finds it on load only if handed it). None for Keras's own, or when no component's
    imported module defines one of that name; two different ones are refused (which one?)."""
    import inspect
    import sys

    import keras

    if any(getattr(getattr(keras, n, None), name, None) for n in KERAS_FUNCTION_NAMESPACES):
        return None
    found = {
        f"{module_name}:{name}": candidate
        for module_name, module in list(sys.modules.items())
        if module is not None and covering_component(module_name, components) is not None
        for candidate in [getattr(module, name, None)]
        if inspect.isfunction(candidate) and candidate.__module__ == module_name
    }
    if len(found) > 1:
        raise BuildError(
            f"the model uses a function saved only by its name {name!r}, and several components' "
            f"modules define one ({', '.join(sorted(found))}); register the one the model uses "
            "(@keras.saving.register_keras_serializable(package=...))",
            path=source.path,
            field="components",
            value=name,
        )
    return next(iter(found.values()), None)


def _resolve_object(obj: UsedObject) -> Any:
    """The Python object Keras will deserialize ``obj`` into, as this process has it: what the
    registry holds under its name (from the module the config gives), else that module's class."""
    import keras

    found = keras.saving.get_registered_object(obj.name)
    if found is not None and (not obj.module or getattr(found, "__module__", None) == obj.module):
        return found
    try:
        return getattr(importlib.import_module(obj.module), obj.class_name, None)
    except Exception:
        return None
