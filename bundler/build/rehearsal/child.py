"""The rehearsal's fresh interpreter: load the bundle as a service would, and say what happened.

``bundler.build.rehearsal.run`` starts this interpreter, sets up what it may import, and calls
:func:`rehearse` with the folder the build just wrote. It loads the bundle through
``load_bundle`` itself (policy ``strict``, files verified, golden examples replayed) and returns a
JSON-ready verdict. A failure is described as facts the build can put in the user's terms
(``rehearsal_verdict``): the loader's error, the root cause under it, a module that could not be
found, the custom objects Keras found unregistered after the loader imported the components, and
each component whose import fails here. It never returns a traceback, and never a config.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

CAUSE_LIMIT = 2000


def rehearse(request: dict[str, Any]) -> dict[str, Any]:
    """Load ``request["bundle"]`` under ``request["policy"]`` and replay its examples."""
    from bundler.load.loader import load_bundle

    root = Path(request["bundle"])
    started = time.perf_counter()
    try:
        loaded = load_bundle(root, policy=request["policy"], check_examples=True)
    except Exception as error:  # the verdict is the point: every failure is described
        return {"ok": False, "error": describe(error, root)}
    return {
        "ok": True,
        "mode": loaded.mode,
        "examples": len(loaded.lock.examples),
        "seconds": round(time.perf_counter() - started, 3),
    }


def describe(error: BaseException, root: Path) -> dict[str, Any]:
    """The facts of a failed load, as JSON."""
    from bundler.errors import BundleError

    facts: dict[str, Any] = {
        "type": type(error).__name__,
        "message": error.message if isinstance(error, BundleError) else str(error),
        "details": list(error.details)[:20] if isinstance(error, BundleError) else [],
        "cause": root_cause(error),
        "missing_module": missing_module(error),
    }
    try:
        facts["components"] = _component_failures(root)
        facts["unregistered"] = _unregistered_objects(root)
    except Exception as reading:  # a bundle that cannot be read is described by the error above
        facts["components"], facts["unregistered"] = [], []
        facts["unreadable"] = f"{type(reading).__name__}: {reading}"
    return facts


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def root_cause(error: BaseException) -> str:
    """The innermost exception under ``error``, as ``Type: message`` ("" when there is none)."""
    inner = _chain(error)[-1]
    if inner is error:
        return ""
    text = f"{type(inner).__name__}: {inner}"
    return text if len(text) <= CAUSE_LIMIT else text[: CAUSE_LIMIT - 3] + "..."


def missing_module(error: BaseException) -> str | None:
    """The module a ``ModuleNotFoundError`` under ``error`` could not find, if there is one."""
    for link in _chain(error):
        if isinstance(link, ModuleNotFoundError) and link.name:
            return link.name
    return None


def _component_failures(root: Path) -> list[dict[str, Any]]:
    """Each component of the lock whose import fails here, with why (a failed import is not kept
    in ``sys.modules``, so importing again runs it again and fails the same way)."""
    from bundler.compat.components import import_component
    from bundler.verify.lock_reader import read_lock

    lock, _ = read_lock(root)
    failures = []
    for component in lock.components if lock is not None else ():
        try:
            import_component(component.module)
        except Exception as error:
            failures.append(
                {
                    "module": component.module,
                    "message": getattr(error, "message", str(error)),
                    "missing_module": missing_module(error),
                }
            )
    return failures


def _unregistered_objects(root: Path) -> list[dict[str, Any]]:
    """The custom objects the model uses that Keras's registry does not know here, once the
    loader has imported the components: what Keras could not find."""
    if "keras" not in sys.modules:
        return []
    import keras

    from bundler.scans.config import custom_objects_used, read_keras_config
    from bundler.verify.lock_reader import read_lock

    lock, _ = read_lock(root)
    if lock is None:
        return []
    config = read_keras_config(root / lock.artifacts.keras)
    missing = []
    for obj in custom_objects_used(config):
        if keras.saving.get_registered_object(obj.name) is not None:
            continue
        module = sys.modules.get(obj.module) if obj.module else None
        if obj.name == obj.class_name and getattr(module, obj.class_name, None) is not None:
            continue  # saved without a registered name: Keras finds the class in its module
        missing.append(
            {
                "name": obj.name,
                "class_name": obj.class_name,
                "module": obj.module,
                "imported": bool(obj.module) and obj.module in sys.modules,
            }
        )
    return missing
