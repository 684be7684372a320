"""The compatibility plan: for each pinned component and framework, what is installed decides.

| installed                               | status        |
| equal to pinned                         | exact         |
| inside the component's compatible range | compatible    |
| outside, but adapters cover pinned ->   | adapted       |
| outside, no adapter                     | incompatible  |
| not installed at all                    | missing       |

Keras and TensorFlow follow the same idea: the same major version as pinned is ``compatible``.
The policy then picks the load path: ``strict`` takes only exact/compatible, ``adapt`` (default)
also adapted, ``fallback`` additionally serves the SavedModel graph when the Keras path is refused.

The plan is one value object shared by verify, load_bundle, inspect and every JSON output, so
``bundle verify --policy P`` predicts exactly what ``load_bundle(policy=P)`` will do. Where the
installed versions come from is an ``Environment``: this interpreter read without importing
(verify), this interpreter after importing (load), or a target described by a pip-freeze file.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .adapters import Adapter, declared_adapters, plan_adaptations, registered_adapters
from .components import (
    InstalledComponent,
    _find_source,
    import_component,
    imported_version,
    normalize_name,
    static_version,
)
from .errors import UsageError
from .versions import VersionError, parse_range, parse_version

POLICIES = ("strict", "adapt", "fallback")
FRAMEWORKS = ("keras", "tensorflow")
ACCEPTED = {
    "strict": {"exact", "compatible"},
    "adapt": {"exact", "compatible", "adapted"},
    "fallback": {"exact", "compatible", "adapted"},
}


@dataclass(frozen=True)
class Check:
    """What is installed of one pinned component or framework, and what that means."""

    name: str
    kind: str  # "component" or "framework"
    pinned: str
    allowed: str
    installed: str | None
    status: str  # exact, compatible, adapted, incompatible, missing
    reason: str
    adaptations: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "pinned": self.pinned,
            "allowed": self.allowed,
            "installed": self.installed,
            "status": self.status,
            "reason": self.reason,
            "adaptations": list(self.adaptations),
        }


@dataclass(frozen=True)
class Plan:
    policy: str
    checks: tuple[Check, ...]
    mode: str  # "keras", "graph" or "refused"
    reason: str
    environment: str = "local"
    adapters: dict[str, list[Adapter]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        return self.mode != "refused"

    @property
    def blocking(self) -> list[Check]:
        """The checks that keep the Keras path from being taken under this policy."""
        return [c for c in self.checks if c.status not in ACCEPTED[self.policy]]

    def table(self) -> str:
        rows = [("component", "pinned", "allowed", "installed", "status")]
        for check in self.checks:
            status = (
                check.status if check.status in ("exact",) else f"{check.status}: {check.reason}"
            )
            rows.append((check.name, check.pinned, check.allowed, check.installed or "-", status))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = []
        for row in rows:
            cells = [row[i].ljust(widths[i]) for i in range(4)]
            lines.append("  ".join([*cells, row[4]]).rstrip())
        for check in self.checks:
            for number, label in enumerate(check.adaptations, start=1):
                lines.append(f"{check.name} adapter {number}: {label}")
        return "\n".join(lines)

    def remedies(self) -> list[str]:
        hints = []
        for check in self.blocking:
            if check.status == "adapted":
                hints.append(
                    f"use policy 'adapt' to apply the adapters registered for {check.name}"
                )
            elif check.kind == "framework" or check.status == "missing":
                hints.append(f"install {check.name} {check.allowed}")
            else:
                hints.append(
                    f"install {check.name} {check.allowed}, or release {check.name} "
                    f"{check.installed} with an @adapter for its objects from {check.pinned}"
                )
        if self.policy != "fallback" and _framework_ok(self.checks, "tensorflow"):
            hints.append("or use policy 'fallback' to serve the SavedModel graph for inference")
        return hints

    def refusal(self) -> str:
        """The refusal as a message: why, the table, and what would make the bundle load."""
        lines = [f"cannot be loaded under policy '{self.policy}': {self.reason}", ""]
        lines.append(self.table())
        remedies = self.remedies()
        if remedies:
            lines.append("")
            lines.append("to load it: " + remedies[0])
            lines.extend(f"         {hint}" for hint in remedies[1:])
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "mode": self.mode,
            "ok": self.ok,
            "reason": self.reason,
            "environment": self.environment,
            "checks": [check.to_json() for check in self.checks],
        }


def _framework_ok(checks: tuple[Check, ...], name: str) -> bool:
    return any(
        c.kind == "framework" and c.name == name and c.status in ("exact", "compatible")
        for c in checks
    )


# -- environments ---------------------------------------------------------------------------------


class Environment(Protocol):
    label: str

    def component(self, module: str, distribution: str | None) -> InstalledComponent: ...

    def framework(self, name: str) -> str | None: ...

    def adapters(self, module: str, installed: InstalledComponent) -> list[Adapter]: ...


def _installed_distribution(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _component_sources(module: str) -> list[Path]:
    source = _find_source(module, sys.path)
    if source is None:
        return []
    if source.name == "__init__.py":
        return sorted(source.parent.rglob("*.py"))
    return [source]


class StaticEnvironment:
    """This interpreter's installed versions, read without importing any component or framework."""

    label = "local"

    def component(self, module: str, distribution: str | None) -> InstalledComponent:
        return static_version(module)

    def framework(self, name: str) -> str | None:
        return _installed_distribution(name)

    def adapters(self, module: str, installed: InstalledComponent) -> list[Adapter]:
        return declared_adapters(_component_sources(module), module)


class ImportedEnvironment:
    """This interpreter after importing each component: what load_bundle will actually use."""

    label = "local"

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
        return version if isinstance(version, str) else _installed_distribution(name)

    def adapters(self, module: str, installed: InstalledComponent) -> list[Adapter]:
        return registered_adapters()


ADAPTER_LINE = "# bundler-adapter "
_FREEZE_LINE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*===?\s*([^\s;#]+)")


class TargetEnvironment:
    """A deploy target described by ``pip freeze`` output (``name==version`` lines).

    ``bundle env --bundle B`` run on the target also writes, for each of the bundle's components,
    the adapters its installed code declares, as comment lines pip ignores::

        # bundler-adapter {"module": "evolve_layers", "name": "evolve>Blend", "to": "2.0.0", ...}

    so that this machine can predict an ``adapted`` load without having the target's code.
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
        for number, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if stripped.startswith(ADAPTER_LINE):
                self._read_adapter(stripped[len(ADAPTER_LINE) :], number)
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
            return declared_adapters(_component_sources(module), module)
        return []


def describe_environment(lock: dict[str, Any] | None = None) -> list[str]:
    """This interpreter as ``name==version`` lines, read without importing anything.

    With a bundle's lock, its components found on ``sys.path`` without a distribution are listed
    too, each followed by the adapters its code declares (``ADAPTER_LINE`` comments).
    """
    lines = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            lines[normalize_name(name)] = [f"{name}=={dist.version}"]
    for component in (lock or {}).get("components", []):
        module = component["module"]
        found = static_version(module)
        if not found.found:
            continue
        key = normalize_name(found.distribution or module)
        if key not in lines and found.version:
            lines[key] = [f"{module}=={found.version}"]
        for declared in declared_adapters(_component_sources(module), module):
            entry = {"module": module, "name": declared.name, "versions": declared.versions}
            if declared.to is not None:
                entry["to"] = declared.to
            lines.setdefault(key, []).append(ADAPTER_LINE + json.dumps(entry, sort_keys=True))
    return [line for key in sorted(lines) for line in lines[key]]


# -- the plan -------------------------------------------------------------------------------------


def _same(left: str, right: str) -> bool:
    try:
        return parse_version(left).compare(parse_version(right)) == 0
    except VersionError:
        return left == right


def _component_check(
    component: dict[str, Any], env: Environment
) -> tuple[Check, dict[str, list[Adapter]]]:
    module = component["module"]
    pinned = component["version"]
    allowed = component["compatible"]
    installed = env.component(module, component.get("distribution"))

    def check(status: str, reason: str, adaptations: tuple[str, ...] = ()) -> Check:
        return Check(
            module, "component", pinned, allowed, installed.version, status, reason, adaptations
        )

    if not installed.found:
        return check("missing", "not installed"), {}
    if installed.version is None:
        return check("incompatible", "installed, but it declares no version"), {}
    try:
        parse_version(installed.version)
    except VersionError:
        return check("incompatible", f"installed version {installed.version!r} is not semver"), {}
    if _same(installed.version, pinned):
        return check("exact", "same version as pinned"), {}
    if parse_range(allowed).contains(installed.version):
        return check("compatible", f"inside {allowed}"), {}
    adapters = env.adapters(module, installed)
    plan = plan_adaptations(adapters, list(component.get("objects", [])), pinned, installed.version)
    if plan:
        labels = tuple(step.label for steps in plan.values() for step in steps)
        return check("adapted", f"outside {allowed}; adapters from {pinned}", labels), plan
    return (
        check("incompatible", f"outside {allowed} and no adapter from {pinned}"),
        {},
    )


def _framework_check(name: str, pinned: str, env: Environment) -> Check:
    installed = env.framework(name)
    major = pinned.split(".", 1)[0]
    allowed = f"{major}.x"
    if installed is None:
        return Check(name, "framework", pinned, allowed, None, "missing", "not installed")
    if installed == pinned:
        return Check(
            name, "framework", pinned, allowed, installed, "exact", "same version as pinned"
        )
    if installed.split(".", 1)[0] == major:
        return Check(
            name, "framework", pinned, allowed, installed, "compatible", f"same major {major}"
        )
    return Check(
        name,
        "framework",
        pinned,
        allowed,
        installed,
        "incompatible",
        f"major version changed from {major}",
    )


def make_plan(lock: dict[str, Any], policy: str, env: Environment) -> Plan:
    """The load plan for a bundle's lock under ``policy`` in environment ``env``."""
    if policy not in POLICIES:
        raise UsageError(
            f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}", field="policy"
        )
    checks = []
    adapters: dict[str, list[Adapter]] = {}
    for component in lock.get("components", []):
        check, plan = _component_check(component, env)
        checks.append(check)
        adapters.update(plan)
    environment = lock.get("environment", {})
    for name in FRAMEWORKS:
        checks.append(_framework_check(name, str(environment.get(name, "?")), env))
    frozen = tuple(checks)
    blocking = [c for c in frozen if c.status not in ACCEPTED[policy]]
    if not blocking:
        adapted = [c for c in frozen if c.status == "adapted"]
        reason = (
            "adapted: " + ", ".join(c.name for c in adapted)
            if adapted
            else "all pinned versions fit"
        )
        return Plan(policy, frozen, "keras", reason, env.label, adapters)
    why = "; ".join(f"{c.name} {c.installed or '(missing)'}: {c.reason}" for c in blocking)
    if policy == "fallback" and _framework_ok(frozen, "tensorflow"):
        return Plan(
            policy,
            frozen,
            "graph",
            f"the Keras path is refused: {why}",
            env.label,
        )
    return Plan(policy, frozen, "refused", why, env.label)
