"""Where a model's objects are defined: recorded by the build, imported by load, checked by verify.

Keras finds a custom object on load by the name it was saved under, in its process-wide registry:
only what some imported module registered. A package that registers its layers in a submodule its
``__init__`` does not import, or never registers them at all (kimm 0.2.5 defines its models in
``kimm._src.models.*`` and registers none), builds fine in the factory's process, where that code
ran, and fails to load in any other.

So the build records, per component, where each object the saved config names is defined:
``defined_in``, registered name -> ``"module:qualname"`` (entry-point syntax), checked to lead back
to the very object (``reference_of``). ``load_bundle`` imports exactly those modules (and the
component roots, as before: they give the version and the adapters), looks each object up by its
qualname and hands them to Keras as ``custom_objects`` for that one load (``locate_objects``):
registration no longer matters, and no module the lock does not name is imported. ``bundle verify``
checks the same modules are installed without importing them (``bundler.compat.module_finder``).

Locks written before the field existed load as they always did: the component roots imported,
each component's registered objects handed to Keras. When Keras still cannot find an object,
``keras_failure`` says which, where the lock or the config says it lives, and what to do, instead of
Keras's message with the model's whole config in it.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from bundler.compat.components import covers, import_component, registered_objects
from bundler.compat.plan import Check, Plan
from bundler.errors import LoadError, UnsafeBundleError
from bundler.lock.model import Lock, LockedComponent
from bundler.scans.config import serialized_objects

__all__ = [
    "keras_failure",
    "locate_objects",
    "reference_of",
    "split_reference",
]

_IDENTIFIERS = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_NOT_FOUND = re.compile(r"Could not locate (class|function) '([^']+)'")
_NO_PARENT = re.compile(
    r"Could not deserialize (class|function) '([^']+)' because its parent module (\S+) cannot"
)
CAUSE_MAX_CHARS = 500


def split_reference(reference: str) -> tuple[str, str]:
    """``("mylib.layers", "Shift")`` for ``"mylib.layers:Shift"``."""
    module, _, qualname = reference.partition(":")
    return module, qualname


def _names_by_module(component: LockedComponent) -> dict[str, list[str]]:
    """The component's recorded modules, each with the registered names of what it defines."""
    modules: dict[str, list[str]] = {}
    for name, reference in sorted((component.defined_in or {}).items()):
        modules.setdefault(split_reference(reference)[0], []).append(name)
    return modules


def _walk(module: Any, qualname: str) -> Any:
    found = module
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


def reference_of(obj: Any) -> str:
    """``"module:qualname"`` of ``obj``, checked to lead back to it; ValueError says why not.

    Run by the build, where the object's module is already imported.
    """
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise ValueError("it has no module and qualified name to be found by")
    if "<locals>" in qualname:
        raise ValueError(
            f"it is defined inside a function ({module}.{qualname}), where no other process can "
            "find it; define it at module level"
        )
    if not (_IDENTIFIERS.match(module) and _IDENTIFIERS.match(qualname)):
        raise ValueError(f"{module}.{qualname} is not an importable name")
    try:
        owner = sys.modules.get(module) or importlib.import_module(module)
        found = _walk(owner, qualname)
    except Exception as error:
        raise ValueError(
            f"'{module}:{qualname}' does not lead back to it ({type(error).__name__}: {error})"
        ) from error
    if found is not obj:
        raise ValueError(f"'{module}:{qualname}' names another object (the name is rebound)")
    return f"{module}:{qualname}"


# -- load -----------------------------------------------------------------------------------------


def _check_of(plan: Plan, component: LockedComponent) -> Check | None:
    return next((c for c in plan.checks if c.name == component.module), None)


def _reinstall_hint(component: LockedComponent, check: Check | None) -> str:
    """What puts the build's code back: its distribution at the pinned version."""
    distribution = component.distribution or (check.distribution if check else None)
    same = check is not None and check.installed == component.version
    if distribution:
        force = "--force-reinstall " if same else ""
        return f"pip install {force}'{distribution}=={component.version}'"
    return f"install {component.module} {component.version} as the bundle was built with it"


def locate_objects(lock: Lock, plan: Plan, where: str) -> dict[str, Any]:
    """The objects Keras may need, by the name it looks them up by: ``custom_objects``.

    Imports each component root, then each module the lock records, and nothing else. A lock
    without ``defined_in`` gets today's objects of its older bundler: what its component roots
    register.
    """
    import keras

    custom_objects: dict[str, Any] = {}
    for component in lock.components:
        root = import_component(component.module)
        if component.defined_in is None:
            custom_objects.update(registered_objects(root))
            continue
        check = _check_of(plan, component)
        for module, names in _names_by_module(component).items():
            imported = _import_defining(module, names, component, check, where)
            for name in names:
                reference = component.defined_in[name]
                try:
                    obj = _walk(imported, split_reference(reference)[1])
                except AttributeError:
                    raise LoadError(
                        f"module {module!r} has no {split_reference(reference)[1]!r}, which the "
                        f"lock records as {name!r} ({reference}) of component "
                        f"{component.module!r}{_versions(component, check)}; the build's version "
                        f"has it: {_reinstall_hint(component, check)}",
                        path=where,
                    ) from None
                if not covers(component.module, getattr(obj, "__module__", None) or ""):
                    raise UnsafeBundleError(
                        f"{reference} (recorded as {name!r} of component {component.module!r}) "
                        f"is {_dotted(obj)}, from outside the component; refusing to load it",
                        path=where,
                    )
                registered = keras.saving.get_registered_object(name)
                if registered is not None and registered is not obj:
                    raise LoadError(
                        f"Keras's registry holds another object under {name!r} "
                        f"({_dotted(registered)}) than the one the lock records ({reference}); "
                        "Keras would build the model from the registry's, so it would not be the "
                        "model the bundle was built with",
                        path=where,
                    )
                custom_objects[name] = obj
    return custom_objects


def _dotted(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', '?')}"


def _versions(component: LockedComponent, check: Check | None) -> str:
    if check is None or check.installed is None:
        return ""
    if check.installed == component.version:
        return f", installed {check.installed} as built"
    return f", installed {check.installed}, built with {component.version}"


def _import_defining(
    module: str,
    names: list[str],
    component: LockedComponent,
    check: Check | None,
    where: str,
) -> Any:
    """Import a module the lock records, or a LoadError saying which objects need it and why."""
    defines = ", ".join(repr(name) for name in names)
    head = f"module {module!r}, which the lock says defines {defines} (component "
    head += repr(component.module)
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        missing = error.name or module
        if missing == module or module.startswith(missing + "."):
            raise LoadError(
                f"{head}{_versions(component, check)}), is not installed; the build's version "
                f"has it: {_reinstall_hint(component, check)}",
                path=where,
            ) from error
        raise LoadError(
            f"importing {head}) failed: it needs module {missing!r}, which is not installed; "
            f"install the distribution that provides {missing!r}",
            path=where,
        ) from error
    except Exception as error:
        raise LoadError(
            f"importing {head}) failed: {type(error).__name__}: {_first_line(str(error))}",
            path=where,
        ) from error


# -- when Keras still cannot find an object -------------------------------------------------------


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _first_line(text: str) -> str:
    """A message's own words: Keras's configs and object dumps cut off, bounded."""
    for marker in ("Exception encountered: ",):
        if marker in text:
            text = text.rsplit(marker, 1)[1]
    for marker in (" Full object config:", "\n\nconfig=", "config={", "\n"):
        text = text.split(marker, 1)[0]
    text = text.strip().rstrip(".")
    if len(text) > CAUSE_MAX_CHARS:
        cut = text[:CAUSE_MAX_CHARS].rsplit(" ", 1)[0]
        text = f"{cut} (message cut at {CAUSE_MAX_CHARS} characters)"
    return text


def _config_modules(config: Any, name: str) -> list[str]:
    """The modules the model config gives for the object Keras looks up as ``name``."""
    modules = set()
    for obj in serialized_objects(config):
        names = {obj.get("registered_name"), obj["class_name"]}
        if obj["class_name"] == "function":
            names.add(obj.get("config"))
        module = obj.get("module")
        if name in names and isinstance(module, str) and module != "builtins":
            modules.add(module)
    return sorted(modules)


def keras_failure(error: BaseException, lock: Lock, config: Mapping[str, Any]) -> str:
    """Why Keras could not build the model, in a line: the object, its module, what to do."""
    texts = [f"{type(e).__name__}: {e}" for e in _chain(error)]
    for text in texts:
        found = _NOT_FOUND.search(text) or _NO_PARENT.search(text)
        if found:
            return _not_found(found.group(1), found.group(2), lock, config)
    inner = next((t for t in reversed(texts) if _first_line(t.split(": ", 1)[-1])), texts[0])
    return f"Keras could not load the model: {_first_line(inner)}"


def _not_found(kind: str, name: str, lock: Lock, config: Mapping[str, Any]) -> str:
    for component in lock.components:
        for registered, reference in (component.defined_in or {}).items():
            if name in (registered, split_reference(reference)[1].rsplit(".", 1)[-1]):
                return (
                    f"Keras could not find {kind} {name!r} although load imported it from "
                    f"{reference}, where the lock records it (component {component.module!r}): "
                    "the component's code looks it up some other way; report it to the "
                    f"maintainers of {component.module!r}"
                )
    modules = _config_modules(config, name)
    said = f" (module {modules[0]!r} in the model config)" if modules else ""
    older = [c.module for c in lock.components if c.defined_in is None]
    if older:
        imported = [m for m in modules if m in sys.modules]
        why = (
            f"{imported[0]!r} was imported but does not register it with Keras"
            if imported
            else f"none of {', '.join(repr(m) for m in older)} imports "
            + (repr(modules[0]) if modules else "the module that registers it")
        )
        return (
            f"Keras could not find {kind} {name!r}{said}: this bundle's lock does not record "
            "where its objects are defined (an older bundler built it), so load imported only "
            f"its components, and {why}; rebuild the bundle with this bundler, whose lock records "
            "the module that defines it"
        )
    return (
        f"Keras could not find {kind} {name!r}{said}, and the lock records no module defining "
        "it: code inside the model looks it up by a name its saved config does not show; "
        "register it with @keras.saving.register_keras_serializable in a module the component "
        "imports, and rebuild the bundle"
    )
