"""The compatibility plan: for each pinned component and framework, what is installed decides.

| installed                                           | status        |
| equal to pinned, and its defining sources the same  | exact         |
| equal to pinned, but its defining sources differ    | modified      |
| inside the component's compatible range             | compatible    |
| outside, but adapters cover pinned -> installed     | adapted       |
| outside (older, or newer without adapters)          | incompatible  |
| not installed at all                                | missing       |

A component is also ``incompatible`` when a module the lock records as defining one of the
model's objects (``defined_in``) is not installed, whatever its version says: the loader imports
exactly those modules (``bundler.load.object_locations``), so a class moved or removed by another
release of the package cannot load. The check's ``missing_modules`` names them, and the remedy is
the version the bundle was built with.

Keras and TensorFlow are judged the same way against a window: by default ``>=pinned <next
major`` (an older Keras cannot read what a newer one wrote), widened by the manifest's
``frameworks``. A library of TensorFlow ops the graph needs (the lock's ``op_libraries``,
``bundler.compat.op_libraries``) must be installed in the installed TensorFlow's series, since it is
compiled for one; without it neither the Keras model (which ran those ops when it was traced) nor
the graph loads, so a missing one refuses the load under every policy. The policy then picks the
load path: ``strict`` takes only exact/compatible; ``adapt`` (default) also adapted and
modified (a modified component loads only once the golden examples replay within tolerance);
``fallback`` additionally serves the SavedModel graph when the Keras path is refused or the
replay drifts.

The plan is one value object shared by verify, load_bundle, inspect and every JSON output, so
``bundle verify --policy P`` predicts exactly what ``load_bundle(policy=P)`` will do: its ``mode``
is the path load takes (``keras``, ``graph``, or ``refused``), and ``outcome`` says it in words.
What the plan cannot settle without running the model it says in ``notes`` and in ``outcome``: a
``modified`` component loads only once its golden examples replay (``--smoke`` replays them).
Where the installed versions come from is an ``Environment`` (``bundler.compat.environments``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from bundler.compat.adapters import Adapter, adapter_chains
from bundler.compat.components import InstalledComponent
from bundler.compat.environments import Environment
from bundler.compat.op_libraries import OP_LIBRARIES, install_hint, series_bounds
from bundler.errors import UsageError
from bundler.lock.model import Lock, LockedComponent, LockedOpLibrary
from bundler.types import CheckKind, Mode, Policy, Status
from bundler.versions.ranges import framework_range, parse_range
from bundler.versions.version import VersionError, parse_version

POLICIES = ("strict", "adapt", "fallback")
FRAMEWORKS = ("keras", "tensorflow")
ACCEPTED = {
    "strict": {"exact", "compatible"},
    "adapt": {"exact", "compatible", "adapted", "modified"},
    "fallback": {"exact", "compatible", "adapted", "modified"},
}


@dataclass(frozen=True)
class Check:
    """What is installed of one pinned component or framework, and what that means."""

    name: str
    kind: CheckKind
    pinned: str
    allowed: str
    installed: str | None
    status: Status
    reason: str
    adaptations: tuple[str, ...] = ()
    distribution: str | None = None  # the pip name to install it by
    missing_modules: tuple[str, ...] = ()  # recorded as defining the model's objects, not installed
    hint: str | None = None  # what to run to install a fitting version, where the range won't say

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
            "distribution": self.distribution,
            "missing_modules": list(self.missing_modules),
        }


@dataclass(frozen=True)
class Plan:
    policy: Policy
    checks: tuple[Check, ...]
    mode: Mode
    reason: str
    environment: str = "local"
    adapters: dict[str, list[Adapter]] = field(default_factory=dict, compare=False, repr=False)
    notes: tuple[str, ...] = ()  # what the plan could not check, or does the old way

    @property
    def outcome(self) -> str:
        """What load does, in words: the mode, and what it waits on."""
        if self.mode == "refused":
            return "REFUSES to load"
        if self.mode == "graph":
            return "serves the SavedModel graph"
        if not self.replay:
            return "loads the Keras model"
        if self.policy == "fallback":
            return (
                "loads the Keras model once its golden examples replay within tolerance, else "
                "serves the SavedModel graph"
            )
        return "loads the Keras model once its golden examples replay within tolerance"

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

    @property
    def replay(self) -> bool:
        """The Keras path must replay the golden examples before the model is returned."""
        return self.mode == "keras" and any(c.status == "modified" for c in self.checks)

    def remedies(self) -> list[str]:
        hints = []
        for check in self.blocking:
            install = _install_hint(check)
            if check.missing_modules:
                pinned = (
                    f"pip install '{check.distribution}=={check.pinned}'"
                    if check.distribution
                    else f"install {check.name} {check.pinned} as the bundle was built with it"
                )
                hints.append(
                    f"{pinned} (the version the bundle was built with has "
                    f"{', '.join(check.missing_modules)})"
                )
            elif check.status == "adapted":
                hints.append(
                    f"use policy 'adapt' to apply the adapters registered for {check.name}"
                )
            elif check.status == "modified":
                exact = (
                    f"pip install --force-reinstall '{check.distribution}=={check.pinned}'"
                    if check.distribution
                    else f"{check.name} {check.pinned} as built"
                )
                hints.append(
                    f"reinstall the code the bundle was built with ({exact}), or use policy "
                    "'adapt' to load it once its golden examples replay the same"
                )
            elif check.hint is not None:
                hints.append(check.hint)
            elif check.status == "missing" or check.installed is None:
                hints.append(install)
            elif check.kind == "framework" or _older(check.installed, check.pinned):
                hints.append(f"upgrade {check.name}: {install}")
            else:
                hints.append(
                    f"{install}, or release {check.name} {check.installed} with an @adapter for "
                    f"its objects from {check.pinned}"
                )
        if (
            self.policy != "fallback"
            and _framework_ok(self.checks, "tensorflow")
            and not any(c.kind == "op_library" for c in self.blocking)
        ):
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
            "outcome": self.outcome,
            "replay_examples": self.replay,
            "checks": [check.to_json() for check in self.checks],
            "notes": list(self.notes),
        }


def _framework_ok(checks: tuple[Check, ...], name: str) -> bool:
    return any(
        c.kind == "framework" and c.name == name and c.status in ("exact", "compatible")
        for c in checks
    )


# -- the plan -------------------------------------------------------------------------------------


def _install_hint(check: Check) -> str:
    """``pip install 'NAME>=X,<Y'`` for a distribution; the range, for code found by module."""
    if not check.distribution:  # code on the path (PYTHONPATH, a folder): pip cannot install it
        return f"make {check.name} {check.allowed} importable (code on the path: not from pip)"
    try:
        specifier = parse_range(check.allowed).to_pip()
    except VersionError:
        specifier = None
    if specifier is None:
        specifier = f"=={check.pinned}"
    return f"pip install '{check.distribution}{specifier}'"


def _same(left: str, right: str) -> bool:
    try:
        return parse_version(left).compare(parse_version(right)) == 0
    except VersionError:
        return left == right


def _older(installed: str, pinned: str) -> bool:
    try:
        return parse_version(installed).compare(parse_version(pinned)) < 0
    except VersionError:
        return False


def _component_check(
    component: LockedComponent, env: Environment, has_examples: bool
) -> tuple[Check, dict[str, list[Adapter]], str | None]:
    """The version check, then the recorded modules: a missing one makes it ``incompatible``.

    The third value is a note when the environment cannot tell whether the modules are there.
    """
    check, chains, installed = _version_check(component, env, has_examples)
    if component.defined_in is None:
        note = (
            f"the lock does not record where {component.module}'s objects are defined (an older "
            f"bundler built it): load imports {component.module} only and finds its objects by "
            "what it registers with Keras; rebuild the bundle to have its modules recorded and "
            "checked"
        )
        return check, chains, note
    if check.status in ("missing", "incompatible") or not component.defining_modules:
        return check, chains, None
    missing = env.missing_modules(component, installed)
    if missing is None:
        note = (
            f"not checked: whether {env.label} has {component.module}'s modules "
            f"{', '.join(component.defining_modules)}; write the environment file with "
            "'bundle env --bundle BUNDLE' there to check them"
        )
        return check, chains, note
    if not missing:
        return check, chains, None
    by_module: dict[str, list[str]] = {}
    for name, reference in sorted(component.defined_in.items()):
        by_module.setdefault(reference.partition(":")[0], []).append(name)
    what = "; ".join(
        f"{module} (defines {', '.join(by_module.get(module, []))})" for module in missing
    )
    label = "module" if len(missing) == 1 else "modules"
    incompatible = replace(
        check,
        status="incompatible",
        reason=f"installed without the {label} the model's objects are defined in: {what}",
        adaptations=(),
        missing_modules=tuple(missing),
    )
    return incompatible, {}, None


def _version_check(
    component: LockedComponent, env: Environment, has_examples: bool
) -> tuple[Check, dict[str, list[Adapter]], InstalledComponent]:
    module = component.module
    pinned = component.version
    allowed = component.compatible
    installed = env.component(module, component.distribution)
    distribution = component.distribution or installed.distribution

    def check(status: Status, reason: str, adaptations: tuple[str, ...] = ()) -> Check:
        return Check(
            module,
            "component",
            pinned,
            allowed,
            installed.version,
            status,
            reason,
            adaptations,
            distribution,
        )

    if not installed.found:
        return check("missing", "not installed"), {}, installed
    if installed.version is None:
        return check("incompatible", "installed, but it declares no version"), {}, installed
    try:
        parse_version(installed.version)
    except VersionError:
        return (
            check("incompatible", f"installed version {installed.version!r} is not a version"),
            {},
            installed,
        )
    if _same(installed.version, pinned):
        recorded = component.source_sha256
        now = env.sources_digest(installed, component) if component.sources else None
        if now is None or now == recorded:
            return check("exact", "same version as pinned"), {}, installed
        changed = "its code differs from the build's under the same version"
        if not has_examples:
            return (
                check(
                    "incompatible",
                    f"{changed}, and the bundle has no golden examples to prove it loads the same",
                ),
                {},
                installed,
            )
        return check("modified", changed), {}, installed
    if parse_range(allowed).contains(installed.version):
        return check("compatible", f"inside {allowed}"), {}, installed
    if _older(installed.version, pinned):
        return check("incompatible", f"older than the pinned {pinned}"), {}, installed
    adapters = env.adapters(module, installed)
    chains = adapter_chains(adapters, component.objects, pinned, installed.version)
    if chains:
        labels = tuple(step.label for steps in chains.values() for step in steps)
        return (
            check("adapted", f"outside {allowed}; adapters from {pinned}", labels),
            chains,
            installed,
        )
    return check("incompatible", f"outside {allowed} and no adapter from {pinned}"), {}, installed


def _framework_check(name: str, pinned: str, widened: str | None, env: Environment) -> Check:
    installed = env.framework(name)
    try:
        allowed = widened or framework_range(pinned)
        window = parse_range(allowed)
    except VersionError:
        allowed, window = "?", None

    def check(status: Status, reason: str) -> Check:
        return Check(name, "framework", pinned, allowed, installed, status, reason, (), name)

    if installed is None:
        return check("missing", "not installed")
    if _same(installed, pinned):
        return check("exact", "same version as pinned")
    try:
        inside = window is not None and window.contains(installed)
    except VersionError:
        return check("incompatible", f"installed version {installed!r} is not a version")
    if inside:
        return check("compatible", f"inside {allowed}")
    if _older(installed, pinned) and not widened:
        return check(
            "incompatible",
            f"older than the build's {pinned}: it may not read what {pinned} wrote",
        )
    return check("incompatible", f"outside {allowed}")


def _op_library_check(locked: LockedOpLibrary, env: Environment) -> Check:
    """Is the op library installed in a version that fits the TensorFlow installed here?"""
    tensorflow = env.framework("tensorflow")
    allowed, basis = locked.compatible, locked.version
    series = series_bounds(tensorflow) if tensorflow is not None else None
    built = series_bounds(locked.version)
    if series is not None and built is not None and not _older(series[0], built[0]):
        start, end = series  # compiled for one TensorFlow: the installed one's series
        lowest = locked.version if _older(start, locked.version) else start
        allowed, basis = f">={lowest} <{end}", start
    hint = install_hint(locked.distribution, basis)
    ops = ", ".join(locked.ops[:3]) + (", ..." if len(locked.ops) > 3 else "")

    def check(status: Status, reason: str, version: str | None = None) -> Check:
        fits = status in ("exact", "compatible")
        return Check(
            locked.distribution, "op_library", locked.version, allowed, version, status,
            reason, (), locked.distribution, hint=None if fits else hint,
        )  # fmt: skip

    if locked.module not in OP_LIBRARIES:  # never looked up: an import would run its code
        return check("incompatible", "bundler does not know this op library: upgrade bundler")
    installed = env.component(locked.module, locked.distribution)
    version = installed.version
    if not installed.found:
        return check("missing", f"not installed; the model's ops need it ({ops})")
    if version is None:
        return check("incompatible", "installed, but it declares no version")
    try:
        if parse_range(allowed).contains(version):  # the pinned one too, unless for another TF
            if _same(version, locked.version):
                return check("exact", "same version as pinned", version)
            return check("compatible", f"inside {allowed}", version)
    except VersionError:
        return check("incompatible", f"installed version {version!r} is not a version", version)
    built_for = series_bounds(version)
    if allowed != locked.compatible and built_for is not None and built_for != series:
        release = built_for[0].rsplit(".", 1)[0]
        return check(
            "incompatible",
            f"built for TensorFlow {release}, not the {tensorflow} installed here",
            version,
        )
    if _older(version, locked.version):
        return check("incompatible", f"older than the build's {locked.version}", version)
    return check("incompatible", f"outside {allowed}", version)


def make_plan(lock: Lock, policy: Policy, env: Environment) -> Plan:
    """The load plan for a bundle's lock under ``policy`` in environment ``env``."""
    if policy not in POLICIES:
        raise UsageError(
            f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}", field="policy"
        )
    checks = []
    notes = []
    adapters: dict[str, list[Adapter]] = {}
    has_examples = bool(lock.examples)
    for component in lock.components:
        check, chains, note = _component_check(component, env, has_examples)
        checks.append(check)
        adapters.update(chains)
        if note is not None:
            notes.append(note)
    built = lock.environment.to_dict()
    widened = lock.manifest.get("frameworks") or {}
    for name in FRAMEWORKS:
        window = widened.get(name) if isinstance(widened, dict) else None
        pinned = built.get(name, "?")
        checks.append(
            _framework_check(name, pinned, window if isinstance(window, str) else None, env)
        )
    checks += [_op_library_check(library, env) for library in lock.op_libraries]
    frozen = tuple(checks)
    blocking = [c for c in frozen if c.status not in ACCEPTED[policy]]
    if not blocking:
        adapted = [c.name for c in frozen if c.status == "adapted"]
        modified = [c.name for c in frozen if c.status == "modified"]
        reasons = []
        if adapted:
            reasons.append("adapted: " + ", ".join(adapted))
        if modified:
            graph = ", the graph on drift" if policy == "fallback" else ""
            reasons.append(
                f"code changed under the same version: {', '.join(modified)}; loads once the "
                f"golden examples replay within tolerance{graph}"
            )
        reason = "; ".join(reasons) or "all pinned versions fit"
        return Plan(policy, frozen, "keras", reason, env.label, adapters, tuple(notes))
    why = "; ".join(f"{c.name} {c.installed or '(missing)'}: {c.reason}" for c in blocking)
    graph_needs = [c for c in blocking if c.kind == "op_library"]  # the graph needs them too
    if policy == "fallback" and _framework_ok(frozen, "tensorflow") and not graph_needs:
        why = f"the Keras path is refused: {why}"
        return Plan(policy, frozen, "graph", why, env.label, notes=tuple(notes))
    return Plan(policy, frozen, "refused", why, env.label, notes=tuple(notes))
