"""Adapters: migrations of serialized Keras configs, declared by a component's newer code.

A component that changes the config of one of its objects incompatibly registers an adapter for it::

    from bundler import adapter

    @adapter("acme>Scale", versions="<2.0.0", to="2.0.0")
    def scale_v1_to_v2(config: dict) -> dict:
        config["factor"] = config.pop("scale")
        return config

``versions`` says which pinned versions of the component the adapter migrates from; ``to`` says
which version the result corresponds to (default: the installed version), so adapters chain:
1.x -> 2.0.0 -> 3.0.0. A layer whose variables changed too passes ``weights=``, a function from
the layer's saved variables (numpy arrays, in creation order) to the new ones::

    @adapter("acme>Scale", versions="<2.0.0", to="2.0.0", weights=lambda v: [np.log(v[0])])

The registry is the one piece of module-level state here, deliberately, like
Keras's own object registry; a lock guards it because services load bundles from many threads.

Verification must predict adaptations without importing the component (that would import
TensorFlow), so ``declared_adapters`` also reads ``@adapter(...)`` calls from the source text.
"""

from __future__ import annotations

import ast
import copy
import io
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bundler.errors import AdapterError
from bundler.versions.ranges import parse_range
from bundler.versions.version import parse_version

ConfigMigration = Callable[[dict[str, Any]], dict[str, Any]]
WeightsMigration = Callable[[list[Any]], list[Any]]


@dataclass(frozen=True)
class Adapter:
    """One registered migration of the config of the object registered as ``name``."""

    name: str
    versions: str
    to: str | None
    module: str
    function: ConfigMigration | None = None  # None when read from source text only
    weights: WeightsMigration | None = None

    @property
    def label(self) -> str:
        target = self.to or "installed"
        return f"{self.name} ({self.versions} -> {target}) by {self.module}"


@dataclass(frozen=True)
class WeightsEdit:
    """Migrate the variables saved under ``path`` (``layers/<name>/``) with ``step.weights``."""

    path: str
    step: Adapter


_registry: list[Adapter] = []
_registry_lock = threading.Lock()


def adapter(
    name: str, *, versions: str, to: str | None = None, weights: WeightsMigration | None = None
) -> Callable[[ConfigMigration], ConfigMigration]:
    """Register ``function`` as the migration of ``name``'s config from ``versions``.

    ``weights``, if given, migrates the layer's saved variables as well.
    """
    parse_range(versions)  # fail at import time, in the component's own code, on a bad range
    if to is not None:
        parse_version(to)

    def register(function: ConfigMigration) -> ConfigMigration:
        entry = Adapter(name, versions, to, getattr(function, "__module__", "?"), function, weights)
        with _registry_lock:
            _registry[:] = [
                a
                for a in _registry
                if not (a.name == name and a.versions == versions and a.module == entry.module)
            ]
            _registry.append(entry)
        return function

    return register


def registered_adapters(names: set[str] | None = None) -> list[Adapter]:
    with _registry_lock:
        return [a for a in _registry if names is None or a.name in names]


def chain(adapters: list[Adapter], pinned: str, installed: str) -> list[Adapter]:
    """The adapters to apply, in order, to move one object's config from ``pinned`` onwards."""
    steps: list[Adapter] = []
    current = pinned
    used: set[int] = set()
    while True:
        step = next(
            (
                a
                for index, a in enumerate(adapters)
                if index not in used and parse_range(a.versions).contains(current)
            ),
            None,
        )
        if step is None:
            return steps
        used.add(adapters.index(step))
        steps.append(step)
        if step.to is None:
            return steps
        current = step.to
        if parse_version(current) >= parse_version(installed):
            return steps


def adapter_chains(
    adapters: list[Adapter], objects: Iterable[str], pinned: str, installed: str
) -> dict[str, list[Adapter]]:
    """{registered name: chain} for every object of a component that has a chain from pinned."""
    chains = {}
    for name in objects:
        steps = chain([a for a in adapters if a.name == name], pinned, installed)
        if steps:
            chains[name] = steps
    return chains


def apply_to_config(
    config: dict[str, Any], chains: dict[str, list[Adapter]]
) -> tuple[dict[str, Any], list[str], list[WeightsEdit]]:
    """Migrate every serialized object in a Keras model config.

    Returns the new config, the labels of the adapters applied, and the weight migrations to apply
    to ``model.weights.h5``, each at the path where Keras saved that layer's variables: a layer of a
    model is saved under ``layers/<its name>/``, nested models nest the same way.
    """
    result = copy.deepcopy(config)
    applied: list[str] = []
    edits: list[WeightsEdit] = []

    def migrate(node: dict[str, Any], name: str, steps: list[Adapter], where: str | None) -> None:
        for step in steps:
            if step.function is None:
                raise AdapterError(f"adapter {step.label} is not loaded")
            try:
                migrated = step.function(copy.deepcopy(node["config"]))
            except Exception as error:
                raise AdapterError(
                    f"adapter {step.label} failed on {name}: {type(error).__name__}: {error}",
                    field=name,
                ) from error
            if not isinstance(migrated, dict):
                raise AdapterError(
                    f"adapter {step.label} returned {type(migrated).__name__}, not a dict",
                    field=name,
                )
            node["config"] = migrated
            applied.append(step.label)
            if step.weights is not None:
                if where is None:
                    raise AdapterError(
                        f"adapter {step.label} migrates weights, but {name} is not a layer of "
                        "the model whose saved variables can be found",
                        field=name,
                    )
                edits.append(WeightsEdit(where, step))

    def visit(node: Any, where: str | None) -> None:
        if isinstance(node, list):
            for value in node:
                visit(value, None)
            return
        if not isinstance(node, dict):
            return
        name = node.get("registered_name") or node.get("class_name")
        steps = chains.get(name) if isinstance(name, str) else None
        if steps and isinstance(node.get("config"), dict):
            assert isinstance(name, str)
            migrate(node, name, steps, where)
        for key, value in node.items():
            layers = value.get("layers") if key == "config" and isinstance(value, dict) else None
            if where is None or not isinstance(layers, list):
                visit(value, None)
                continue
            for layer in layers:
                inner = layer.get("config") if isinstance(layer, dict) else None
                layer_name = inner.get("name") if isinstance(inner, dict) else None
                visit(
                    layer, f"{where}layers/{layer_name}/" if isinstance(layer_name, str) else None
                )
            visit({k: v for k, v in value.items() if k != "layers"}, None)

    visit(result, "")
    return result, applied, edits


def apply_to_weights(source: bytes, edits: list[WeightsEdit]) -> bytes:
    """``model.weights.h5`` with each edit's variables replaced by what its adapter returns."""
    import h5py  # Keras's own dependency for .keras weights

    buffer = io.BytesIO(source)
    with h5py.File(buffer, "r+") as weights:
        for edit in edits:
            group_path = edit.path + "vars"
            group = weights.get(group_path)
            if not isinstance(group, h5py.Group):
                raise AdapterError(
                    f"adapter {edit.step.label}: no saved variables at {group_path!r}",
                    field=edit.step.name,
                )
            old = [group[str(i)][()] for i in range(len(group))]
            assert edit.step.weights is not None
            try:
                new = list(edit.step.weights(old))
            except Exception as error:
                raise AdapterError(
                    f"adapter {edit.step.label} failed on the weights of {edit.path!r}: "
                    f"{type(error).__name__}: {error}",
                    field=edit.step.name,
                ) from error
            for key in list(group):
                del group[key]
            for index, value in enumerate(new):
                group.create_dataset(str(index), data=value)
    return buffer.getvalue()


# -- reading declarations from source, without importing -----------------------------------------


def _literal(node: ast.AST) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


def _is_adapter_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (isinstance(func, ast.Name) and func.id == "adapter") or (
        isinstance(func, ast.Attribute) and func.attr == "adapter"
    )


def declared_adapters(sources: list[Path], module: str) -> list[Adapter]:
    """``@adapter("name", versions=..., to=...)`` declarations with literal arguments in sources."""
    found: list[Adapter] = []
    for source in sources:
        try:
            text = source.read_text(encoding="utf-8")
            if "adapter" not in text:  # every declaration names it: no tree to build
                continue
            tree = ast.parse(text, filename=str(source))
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for decorator in node.decorator_list:
                if not _is_adapter_call(decorator):
                    continue
                assert isinstance(decorator, ast.Call)
                name = _literal(decorator.args[0]) if decorator.args else None
                keywords = {k.arg: _literal(k.value) for k in decorator.keywords if k.arg}
                versions = keywords.get("versions")
                if isinstance(name, str) and isinstance(versions, str):
                    to = keywords.get("to")
                    found.append(
                        Adapter(name, versions, to if isinstance(to, str) else None, module)
                    )
    return found
