"""Environments: where the installed versions a load plan judges come from.

Three answer the same questions (what is installed of a component, of a framework, which adapters
its code declares, what its defining sources hash to now, which of the modules the lock records as
defining the model's objects are missing):

- ``StaticEnvironment``: this interpreter, read without importing anything (``bundle verify``);
- ``ImportedEnvironment``: this interpreter after importing each component (``load_bundle``);
- ``TargetEnvironment``: a deploy target described by ``pip freeze`` output (``--env FILE``).

All three apply the same version rule (``bundler.compat.components``), so ``bundle verify`` here,
``bundle verify --env`` from ``bundle env`` run there, and ``load_bundle`` there agree.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import sys
from pathlib import Path
from typing import Protocol

from bundler.compat.adapters import Adapter, declared_adapters, registered_adapters
from bundler.compat.components import (
    InstalledComponent,
    component_sources,
    distribution_version,
    import_component,
    imported_version,
    installed_sources_digest,
    name_and_version,
    normalize_name,
    static_version,
)
from bundler.compat.module_finder import module_present
from bundler.errors import UsageError
from bundler.lock.model import Lock, LockedComponent
from bundler.versions.ranges import parse_range
from bundler.versions.version import parse_version


class Environment(Protocol):
    label: str

    def component(self, module: str, distribution: str | None) -> InstalledComponent: ...

    def framework(self, name: str) -> str | None: ...

    def adapters(self, module: str, installed: InstalledComponent) -> list[Adapter]: ...

    def sources_digest(
        self, installed: InstalledComponent, component: LockedComponent
    ) -> str | None: ...

    def missing_modules(
        self, component: LockedComponent, installed: InstalledComponent
    ) -> tuple[str, ...] | None:
        """The component's recorded modules that are not installed; None: cannot be told."""
        ...


class StaticEnvironment:
    """This interpreter's installed versions, read without importing any component or framework."""

    label = "local"

    def component(self, module: str, distribution: str | None) -> InstalledComponent:
        return static_version(module)

    def framework(self, name: str) -> str | None:
        return distribution_version(name)

    def adapters(self, module: str, installed: InstalledComponent) -> list[Adapter]:
        return declared_adapters(component_sources(module), module)

    def sources_digest(
        self, installed: InstalledComponent, component: LockedComponent
    ) -> str | None:
        return _installed_digest(installed, component)

    def missing_modules(
        self, component: LockedComponent, installed: InstalledComponent
    ) -> tuple[str, ...] | None:
        # found as import would find them, none executed (bundler.compat.module_finder); the
        # loader's plan asks the same way, so verify here and load here agree
        return tuple(m for m in component.defining_modules if not module_present(m))


class ImportedEnvironment(StaticEnvironment):
    """This interpreter after importing each component: what load_bundle will actually use."""

    def component(self, module: str, distribution: str | None) -> InstalledComponent:
        try:
            loaded = import_component(module)
        except Exception:
            return InstalledComponent(module, None, None, False)
        return imported_version(loaded)

    def framework(self, name: str) -> str | None:
        # the version this process runs, once imported (the components usually import it): no
        # metadata scan, and right for builds whose distribution has another name (tf-nightly)
        module = sys.modules.get(name)
        version = getattr(module, "__version__", None)
        return version if isinstance(version, str) else distribution_version(name)

    def adapters(self, module: str, installed: InstalledComponent) -> list[Adapter]:
        return registered_adapters()


ADAPTER_LINE = "# bundler-adapter "
SOURCES_LINE = "# bundler-sources "
MODULES_LINE = "# bundler-modules "
_FREEZE_LINE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*===?\s*([^\s;#]+)")


class TargetEnvironment:
    """A deploy target described by ``pip freeze`` output (``name==version`` lines).

    ``bundle env --bundle B`` run on the target also writes, for each of the bundle's components,
    the adapters its installed code declares, the digest of the sources the bundle pins, and which
    of the modules the lock records as defining the model's objects the target has, as comment
    lines pip ignores::

        # bundler-adapter {"module": "evolve_layers", "name": "evolve>Blend", "to": "2.0.0", ...}
        # bundler-sources {"module": "acme_layers", "sha256": "...", "source_hash": "..."}
        # bundler-modules {"found": ["kimm._src.models.convnext"], "missing": [], "module": "kimm"}

    so that this machine can predict an ``adapted``, ``modified`` or failing load without the
    target's code. A file without ``bundler-modules`` lines (plain ``pip freeze``) says nothing of
    modules: when this machine has the very version the target has, its modules are taken as the
    target's; otherwise the plan notes that they were not checked.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.label = str(path)
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UsageError("no such environment file", path=path) from None
        except (OSError, UnicodeDecodeError) as error:
            raise UsageError(f"cannot read environment file: {error}", path=path) from error
        self.versions: dict[str, str] = {}
        self.declared: dict[str, list[Adapter]] = {}
        self.sources: dict[str, tuple[str, str | None]] = {}  # module -> (digest, source_hash)
        self.modules: dict[str, dict[str, bool]] = {}  # component -> {module: found}
        for number, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if stripped.startswith(MODULES_LINE):
                self._read_modules(stripped[len(MODULES_LINE) :], number)
                continue
            if stripped.startswith(ADAPTER_LINE):
                self._read_adapter(stripped[len(ADAPTER_LINE) :], number)
                continue
            if stripped.startswith(SOURCES_LINE):
                self._read_sources(stripped[len(SOURCES_LINE) :], number)
                continue
            if not stripped or stripped.startswith(("#", "-")) or " @ " in stripped:
                continue  # comments, options, editable installs and direct references
            match = _FREEZE_LINE.match(stripped)
            if not match:
                raise UsageError(
                    f"line {number} is not 'name==version': {stripped[:80]!r}", path=path
                )
            self.versions[normalize_name(match[1])] = match[2]

    def _read_adapter(self, text: str, number: int) -> None:
        try:
            entry = json.loads(text)
            found = Adapter(
                str(entry["name"]), str(entry["versions"]), entry.get("to"), str(entry["module"])
            )
            parse_range(found.versions)
            if found.to is not None:
                parse_version(found.to)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise UsageError(
                f"line {number} is not a valid adapter declaration: {error}", path=self.path
            ) from None
        self.declared.setdefault(found.module, []).append(found)

    def _read_sources(self, text: str, number: int) -> None:
        try:
            entry = json.loads(text)
            module, digest = str(entry["module"]), str(entry["sha256"])
            method = entry.get("source_hash")  # absent: file bytes, as before source_hash
            if method is not None and not isinstance(method, str):
                raise TypeError(f"source_hash is {method!r}")
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise UsageError(
                f"line {number} is not a valid sources line: {error}", path=self.path
            ) from None
        self.sources[module] = (digest, method)

    def _read_modules(self, text: str, number: int) -> None:
        try:
            entry = json.loads(text)
            module = str(entry["module"])
            found = {str(name): True for name in entry.get("found", [])}
            missing = {str(name): False for name in entry.get("missing", [])}
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise UsageError(
                f"line {number} is not a valid modules line: {error}", path=self.path
            ) from None
        self.modules.setdefault(module, {}).update({**found, **missing})

    def _lookup(self, *names: str | None) -> str | None:
        for name in names:
            if name and normalize_name(name) in self.versions:
                return self.versions[normalize_name(name)]
        return None

    def component(self, module: str, distribution: str | None) -> InstalledComponent:
        parts = module.split(".")
        prefixes = [".".join(parts[:i]) for i in range(len(parts), 0, -1)]
        version = self._lookup(distribution, *prefixes)
        return InstalledComponent(module, version, distribution, version is not None)

    def framework(self, name: str) -> str | None:
        return self._lookup(name)

    def adapters(self, module: str, installed: InstalledComponent) -> list[Adapter]:
        if module in self.declared:
            return self.declared[module]
        # Without declarations in the file, the target's code cannot be read from here; when this
        # machine has the very same version of the component, its declared adapters are the
        # target's too.
        local = static_version(module)
        if local.version is not None and local.version == installed.version:
            return declared_adapters(component_sources(module), module)
        return []

    def sources_digest(
        self, installed: InstalledComponent, component: LockedComponent
    ) -> str | None:
        # None: the file does not say, or says it of sources hashed another way than the lock's
        digest, method = self.sources.get(installed.module, (None, None))
        return digest if method == component.source_hash else None

    def missing_modules(
        self, component: LockedComponent, installed: InstalledComponent
    ) -> tuple[str, ...] | None:
        said = self.modules.get(component.module, {})
        unsaid = [m for m in component.defining_modules if m not in said]
        missing = [m for m in component.defining_modules if said.get(m) is False]
        if unsaid:  # the file does not say: the same version here has the same modules
            local = static_version(component.module)
            if local.version is None or local.version != installed.version:
                return tuple(missing) or None
            missing += [m for m in unsaid if not module_present(m)]
        return tuple(sorted(missing))


def _installed_digest(installed: InstalledComponent, component: LockedComponent) -> str | None:
    """What the component's pinned sources hash to as installed, the way its lock pinned them."""
    return installed_sources_digest(
        installed, component.sources, component.source_hash, component.source_bytes
    )


def describe_environment(lock: Lock | None = None) -> list[str]:
    """This interpreter as ``name==version`` lines, read without importing anything.

    With a bundle's lock, its components found on ``sys.path`` without a distribution are listed
    too, each followed by the adapters its code declares (``ADAPTER_LINE`` comments), the digest
    of the sources the bundle pins (``SOURCES_LINE``) and which of the modules the lock records as
    defining its objects are installed (``MODULES_LINE``).
    """
    lines = {}
    for dist in importlib.metadata.distributions():  # in sys.path order: the first one imports
        name, version = name_and_version(dist)
        if name and normalize_name(name) not in lines:
            lines[normalize_name(name)] = [f"{name}=={version}"]
    for component in lock.components if lock is not None else ():
        module = component.module
        found = static_version(module)
        if not found.found:
            continue
        key = normalize_name(found.distribution or module)
        if key not in lines and found.version:
            lines[key] = [f"{module}=={found.version}"]
        for declared in declared_adapters(component_sources(module), module):
            entry = {"module": module, "name": declared.name, "versions": declared.versions}
            if declared.to is not None:
                entry["to"] = declared.to
            lines.setdefault(key, []).append(ADAPTER_LINE + json.dumps(entry, sort_keys=True))
        digest = _installed_digest(found, component)
        if digest is not None:
            entry = {"module": module, "sha256": digest}
            if component.source_hash is not None:
                entry["source_hash"] = component.source_hash
            lines.setdefault(key, []).append(SOURCES_LINE + json.dumps(entry, sort_keys=True))
        if component.defining_modules:
            present = [m for m in component.defining_modules if module_present(m)]
            absent = [m for m in component.defining_modules if m not in present]
            said = {"found": present, "missing": absent, "module": module}
            lines.setdefault(key, []).append(MODULES_LINE + json.dumps(said, sort_keys=True))
    return [line for key in sorted(lines) for line in lines[key]]
