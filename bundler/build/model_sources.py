"""The code a built model runs: the source files a bundle pins for each component.

The saved config names only the outermost objects (keras_hub's ``ViTBackbone``); the layers they
make in their constructors (``ViTEncoder``, ``MLP`` from ``vit_layers.py``) are rebuilt by that
code on every load, and their code decides the outputs as much as the config does. So the build
walks the **live model** it has just saved, not the config:

- every object reachable from the model through its attributes (``vars``), lists, tuples, sets
  and dicts, descending into Keras objects (layers and operations, losses, metrics, optimizers,
  initializers, regularizers, constraints, schedules: anything defined in ``keras``) and into
  objects of a declared component, wherever they sit (a layer's sublayers, the compiled loss, the
  optimizer's learning-rate schedule); a Keras ``Operation`` of any package is descended too;
- of each object, its class; a function (an activation, a loss) or a class held as a value is
  taken as it is, a bound method as its function and its object, ``functools.partial`` as its
  function and arguments, a wrapper (``functools.wraps``) as the function it wraps.

To those the build adds the objects the saved config names (``bundler.scans.config``), and then, per
component, every class and function whose module the component covers, with each class's base
classes inside the component (a base in another file of the package is code the model runs too).
The files defining them (``inspect.getsourcefile``) are pinned by their path below the component's
``sys.path`` entry. Code outside every declared component is not: Keras's own is judged by Keras's
version, and a file outside the component's folder (generated, or a link to elsewhere) has no
path a target could find.

Not followed: functions a pinned method calls by name in other modules (helpers); pinning every
module a class's code might call would pin most of a large package (keras_hub's ``Backbone``
imports its preset loader), and make an unrelated edit ``modified``. The walk reads ``__dict__``
only: no property or ``__getattr__`` runs.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bundler.compat.components import covers

_CONTAINERS = (list, tuple, set, frozenset)
_ATOMS = (str, bytes, bytearray, int, float, complex, bool, type(None))  # hold no code


def _descends(obj: Any, modules: tuple[str, ...], operation: type | None) -> bool:
    """Whether the walk reads ``obj``'s attributes: Keras objects and the components' own."""
    module = getattr(type(obj), "__module__", "") or ""
    if covers("keras", module) or any(covers(m, module) for m in modules):
        return True
    return operation is not None and isinstance(obj, operation)


def code_objects(model: Any, modules: Iterable[str]) -> list[Any]:
    """The classes and functions of ``model``'s object graph (see the module docstring)."""
    try:
        import keras

        operation: type | None = keras.Operation
    except (ImportError, AttributeError):
        operation = None
    components = tuple(modules)
    seen: set[int] = set()
    found: dict[int, Any] = {}
    pending: list[Any] = [model]
    while pending:
        obj = pending.pop()
        if isinstance(obj, _ATOMS) or id(obj) in seen:
            continue  # a vocabulary of a million strings is a million steps saved
        seen.add(id(obj))
        if isinstance(obj, dict):
            pending.extend(obj.keys())
            pending.extend(obj.values())
        elif isinstance(obj, _CONTAINERS):
            pending.extend(obj)
        elif inspect.isclass(obj):
            found[id(obj)] = obj
        elif inspect.isfunction(obj) or inspect.isbuiltin(obj):
            found[id(obj)] = obj
            try:
                unwrapped = inspect.unwrap(obj)
            except ValueError:  # a cycle of __wrapped__: the function itself is what there is
                continue
            found[id(unwrapped)] = unwrapped
        elif inspect.ismethod(obj):
            pending.extend((obj.__func__, obj.__self__))
        elif isinstance(obj, functools.partial):
            pending.extend((obj.func, obj.args, obj.keywords))
        else:
            found.setdefault(id(type(obj)), type(obj))
            if _descends(obj, components, operation):
                try:
                    attributes = vars(obj)
                except TypeError:  # no __dict__ (slots, or a C type): nothing held there
                    continue
                pending.extend(attributes.values())
    return list(found.values())


def _module_of(rel: str) -> str:
    """The module a file below a sys.path entry is imported as (``a/b/__init__.py``: ``a.b``)."""
    return rel.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def defining_files(component: str, objects: Iterable[Any], base: Path) -> dict[str, Path]:
    """{path below ``base``: file} of the code of ``component`` among ``objects``: the files
    defining each class or function the component covers, and each class's bases it covers."""
    files: dict[str, Path] = {}
    for obj in objects:
        chain = inspect.getmro(obj) if inspect.isclass(obj) else (obj,)
        for owner in chain:
            if not covers(component, getattr(owner, "__module__", "") or ""):
                continue
            try:
                source = inspect.getsourcefile(owner)
            except TypeError:  # built-in or C-extension: no Python source to pin
                continue
            if not source:
                continue
            try:
                rel = Path(source).resolve().relative_to(base.resolve()).as_posix()
            except ValueError:
                continue  # outside the component's folder: no path a target could find
            # by its file, not its __module__ (functools.wraps copies a wrapped function's)
            if covers(component, _module_of(rel)):
                files[rel] = Path(source)
    return dict(sorted(files.items()))
