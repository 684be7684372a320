"""Components: the modules that hold a model's custom objects, and what is installed of them.

One rule decides a component's installed version, wherever it is asked (build, verify, load,
``bundle env``): the version of the installed **distribution** that provides the module's file,
as ``pip show`` prints it; only code that no installed distribution provides (a folder on
``PYTHONPATH``, the manifest's ``paths``) is judged by its ``__version__``. Packages do not always
keep ``__version__`` in step with their release (keras-tcn 3.5.5 says ``'3.5.4'``), and the
distribution's version is the one a user pins and installs.

The rule is applied two ways that must agree:

- ``imported_version`` reads an imported module (build and load import components anyway);
- ``static_version`` finds the module's file on ``sys.path`` without executing anything, and
  reads a literal ``__version__ = "..."`` from its syntax tree when no distribution provides it.
  Verification uses it: importing a component would import Keras and TensorFlow.

**Source identity.** A version number is a claim; the code is the fact. The build pins the files of
the code the model runs (``bundler.build.model_sources`` chooses them), by their path below the
``sys.path`` entry the package lives in (``tcn/tcn.py``), each by the digest of its Python tokens
(``bundler.compat.source_hash``: comments and layout do not count) and by the sha256 of its bytes.
Load and verify hash the same paths of what is installed now, the way the lock says (a lock without
``source_hash`` pinned bytes): the same version with other code is ``modified``. A file whose bytes
are unchanged is not tokenized again, so the usual check costs one sha256 a file.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.metadata
import inspect
import json
import os
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib.machinery import PathFinder
from pathlib import Path
from types import ModuleType
from typing import Any

from bundler.compat.module_finder import find_module
from bundler.compat.source_hash import SOURCE_HASHES, source_digest
from bundler.errors import ComponentError


def normalize_name(name: str) -> str:
    """A distribution or module name normalised as pip normalises names (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def covers(component: str, module: str) -> bool:
    """A component covers its module and every submodule (``keras_hub``: ``keras_hub.src``)."""
    return module == component or module.startswith(component + ".")


@cache
def _distributions_by_package() -> dict[str, list[str]]:
    return {key: list(value) for key, value in importlib.metadata.packages_distributions().items()}


def top_level_modules(dist: importlib.metadata.Distribution) -> set[str]:
    """The top-level modules a distribution installs (``top_level.txt``, else its RECORD)."""
    declared = dist.read_text("top_level.txt")
    if declared:
        return set(declared.split())
    return {f.parts[0].removesuffix(".py") for f in dist.files or () if f.parts}


def distribution_module_hint(name: str) -> str | None:
    """``'keras-tcn' is the name of an installed distribution, whose module is 'tcn': write
    that under 'module'`` when ``name`` names a distribution rather than a module, else None."""
    try:
        dist = importlib.metadata.distribution(name)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None
    modules = sorted(m for m in top_level_modules(dist) if not m.startswith("_"))
    if not modules:
        return None
    named = " or ".join(repr(m) for m in modules[:3])
    return (
        f"{name!r} is the name of an installed distribution, whose module is {named}: write "
        "that under 'module'"
    )


def _distribution_beside(top: str, base: Path) -> importlib.metadata.Distribution | None:
    """The distribution installed in the same folder as the module that provides ``top``.

    Reading the few metadata folders of one sys.path entry, the likely ones first (their name
    holds the module's), is what keeps a verify from scanning every installed distribution.
    """
    try:
        folders = [e for e in os.scandir(base) if e.name.endswith((".dist-info", ".egg-info"))]
    except OSError:
        return None
    folders.sort(key=lambda e: top.lower() not in e.name.lower().replace("-", "_"))
    for folder in folders:
        dist = importlib.metadata.PathDistribution(Path(folder.path))
        try:
            if top in top_level_modules(dist):
                return dist
        except (OSError, ValueError):
            continue
    return None


@lru_cache(maxsize=64)
def _metadata_folders(base: str, mtime_ns: int) -> tuple[dict[str, list[str]], tuple[str, ...]]:
    """The metadata folders in the ``sys.path`` entry ``base`` as ``base`` was listed when it
    had ``mtime_ns`` (installing or removing a distribution changes that, so the listing is
    cached by it, as importlib.metadata caches its own): by normalised distribution name, in
    listing order, as importlib.metadata finds them; and the ``.dist-info`` folders that record
    an editable install (PEP 610's ``direct_url.json``; most folders have none, so each is one
    failed open)."""
    by_name: dict[str, list[str]] = {}
    editable = []
    try:
        entries = [(e.name, e.path) for e in os.scandir(base or ".")]
    except OSError:
        return {}, ()
    for name, path in entries:
        low = name.lower()
        if not low.endswith((".dist-info", ".egg-info")):
            continue
        by_name.setdefault(_normalized(low.rpartition(".")[0].partition("-")[0]), []).append(path)
        if not low.endswith(".dist-info"):
            continue
        try:
            with open(os.path.join(path, "direct_url.json"), encoding="utf-8") as stream:
                direct = json.loads(stream.read())
        except (OSError, ValueError):
            continue
        if isinstance(direct, dict) and (direct.get("dir_info") or {}).get("editable"):
            editable.append(path)
    return by_name, tuple(editable)


def _normalized(name: str) -> str:
    """A distribution name as importlib.metadata matches it (PEP 503, dashes as underscores)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def _listings() -> Iterator[tuple[dict[str, list[str]], tuple[str, ...]]]:
    """``_metadata_folders`` of each ``sys.path`` entry, in order: the first one imports."""
    for base in sys.path:
        try:
            mtime_ns = os.stat(base or ".").st_mtime_ns
        except OSError:
            continue
        yield _metadata_folders(base, mtime_ns)


def _editable_distribution(top: str, origin: Path) -> importlib.metadata.Distribution | None:
    """An editable install whose project folder holds ``origin`` (its code is not beside it)."""
    for _, editable in _listings():
        for folder in editable:
            dist = importlib.metadata.PathDistribution(Path(folder))
            try:
                if top in top_level_modules(dist):
                    return dist
            except (OSError, ValueError):
                continue
    return None


def installed_distribution(name: str) -> importlib.metadata.Distribution | None:
    """``importlib.metadata.distribution(name)``, or None: found from the cached listings of the
    ``sys.path`` entries where those are all importlib would search (no ``.egg`` on the path, no
    other finder of distributions), for a tenth of its cost; else by importlib itself."""
    plain = not any(base.lower().endswith(".egg") for base in sys.path) and all(
        getattr(finder, "find_distributions", None) is None or finder is PathFinder
        for finder in sys.meta_path
    )
    if plain:
        wanted = _normalized(name)
        for by_name, _ in _listings():
            if wanted in by_name:
                return importlib.metadata.PathDistribution(Path(by_name[wanted][0]))
        return None
    try:
        return importlib.metadata.distribution(name)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None


def providing_distribution(
    module_name: str, origin: Path | None
) -> importlib.metadata.Distribution | None:
    """The installed distribution whose files include ``origin``, the module's source file."""
    top = module_name.split(".", 1)[0]
    if origin is not None:
        beside = _distribution_beside(top, package_base(module_name, origin))
        return beside or _editable_distribution(top, origin)
    for name in _distributions_by_package().get(top, []):  # no file to go by (a zip import)
        try:
            return importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def distribution_version(name: str) -> str | None:
    """The installed version of distribution ``name``, or None."""
    dist = installed_distribution(name)
    return None if dist is None else name_and_version(dist)[1]


def name_and_version(dist: importlib.metadata.Distribution) -> tuple[str | None, str | None]:
    """A distribution's ``Name`` and ``Version``, as ``dist.metadata`` gives them, from the
    headers alone: the email parser that ``metadata`` uses reads every line of the file
    (TensorFlow's runs to dozens of requirements and a long description)."""
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    found: dict[str, str] = {}
    for line in text.partition("\n\n")[0].splitlines():
        if not line:
            break  # the headers end at the first empty line
        key, colon, value = line.partition(":")
        if colon and key in ("Name", "Version") and key not in found:
            found[key] = value.strip()
    if len(found) < 2:  # headers folded or missing: as the email parser reads them
        return dist.metadata["Name"], dist.version
    return found["Name"], found["Version"]


@dataclass(frozen=True)
class InstalledComponent:
    module: str
    version: str | None  # None: found, but no version could be read
    distribution: str | None
    found: bool
    origin: Path | None = None  # the module's source file, where it has one


def _decide(
    module_name: str, origin: Path | None, declared: str | None, found: bool = True
) -> InstalledComponent:
    dist = providing_distribution(module_name, origin)
    if dist is not None:
        name, version = name_and_version(dist)
        return InstalledComponent(module_name, version, name, True, origin)
    return InstalledComponent(module_name, declared, None, found, origin)


def import_component(name: str, *, field: str | None = None, path: str | None = None) -> ModuleType:
    """Import a component module, turning any failure into a ComponentError that names it."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        missing = error.name or name
        raise ComponentError(
            f"cannot import component {name!r}: no module named {missing!r} "
            "(is it installed, or listed under 'paths'?)",
            path=path,
            field=field,
            value=name,
        ) from error
    except Exception as error:  # the module's own code failed while importing
        raise ComponentError(
            f"importing component {name!r} failed: {type(error).__name__}: {error}",
            path=path,
            field=field,
            value=name,
        ) from error


def imported_version(module: ModuleType) -> InstalledComponent:
    """The installed version of an imported component (see the module docstring)."""
    file = getattr(module, "__file__", None)
    origin = Path(file) if isinstance(file, str) else None
    declared = None
    parts = module.__name__.split(".")
    for depth in range(len(parts), 0, -1):  # the module's own __version__, else its packages'
        owner = sys.modules.get(".".join(parts[:depth]))
        value = getattr(owner, "__version__", None)
        if isinstance(value, str):
            declared = value
            break
    return _decide(module.__name__, origin, declared)


def find_source(module_name: str, search: list[str] | None = None) -> Path | None:
    """The Python file that ``import module_name`` would execute last, found without importing
    anything (``bundler.compat.module_finder``: plain and namespace packages, editable installs).

    None for what has no Python source to read: a namespace package, an extension module, a
    module import cannot find.
    """
    found = find_module(module_name, search)
    if found is None or found.origin is None or found.origin.suffix != ".py":
        return None
    return found.origin


def _literal_version(source: Path, depth: int = 0) -> str | None:
    """The first module-level ``__version__ = "..."`` of ``source`` (or of the ``._version``
    module it imports ``__version__`` from), read from its syntax tree; None without one.

    The statements up to the first line that names ``__version__`` are parsed first: when the
    last of them is the assignment, it is the module's first (a top-level simple statement ends
    at its line, and a cut inside anything longer does not parse), and the rest of a long module
    need not be parsed. Otherwise the whole module is."""
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    at = text.find("__version__")
    if at < 0:  # what the tree is searched for: no need to build it
        return None
    end = text.find("\n", at)
    if end >= 0:
        try:
            found = _version_in(ast.parse(text[: end + 1]).body, source, depth)
        except (SyntaxError, ValueError):
            found = None
        if found is not None:
            return found
    try:
        return _version_in(ast.parse(text, filename=str(source)).body, source, depth)
    except (SyntaxError, ValueError):
        return None


def _version_in(body: list[ast.stmt], source: Path, depth: int) -> str | None:
    for node in body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "__version__" for t in targets):
                value = node.value
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    return value.value
        # `from ._version import __version__` (one level, relative to this package)
        if (
            isinstance(node, ast.ImportFrom)
            and depth == 0
            and node.level == 1
            and node.module
            and any(alias.name == "__version__" for alias in node.names)
        ):
            target = source.parent.joinpath(*node.module.split("."))
            for candidate in (target.with_suffix(".py"), target / "__init__.py"):
                if candidate.is_file():
                    return _literal_version(candidate, depth + 1)
    return None


def static_version(module_name: str, search: list[str] | None = None) -> InstalledComponent:
    """The installed version of a component, read without importing it (see module docstring)."""
    loaded = sys.modules.get(module_name)
    # an import still running in another thread (a load importing Keras, say) has put the module
    # there before setting its __version__: what it will say is what its file says
    if loaded is not None and not getattr(getattr(loaded, "__spec__", None), "_initializing", 0):
        return imported_version(loaded)
    origin = find_source(module_name, search)
    if origin is None:
        dist = providing_distribution(module_name, None)
        if dist is not None:  # installed in a form we cannot read statically (zip, custom finder)
            name, version = name_and_version(dist)
            return InstalledComponent(module_name, version, name, True)
        return InstalledComponent(module_name, None, None, False)
    declared = _literal_version(origin)
    parts = module_name.split(".")
    for depth in range(len(parts) - 1, 0, -1):  # else the enclosing packages' __version__
        if declared is not None:
            break
        package = find_source(".".join(parts[:depth]), search)
        if package is not None and package.name == "__init__.py":
            declared = _literal_version(package)
    return _decide(module_name, origin, declared)


def component_sources(module: str) -> list[Path]:
    """Every Python file of a component as found on sys.path (for reading declared adapters)."""
    source = find_source(module)
    if source is None:
        return []
    if source.name == "__init__.py":
        return sorted(source.parent.rglob("*.py"))
    return [source]


def registered_objects(module: ModuleType) -> dict[str, Any]:
    """Keras-serializable objects the module provides, by the name Keras looks them up by.

    Registered objects (``@keras.saving.register_keras_serializable``) under their registered name
    (``package>Name``); other Keras classes defined in the module under their class name, which is
    what Keras records as ``registered_name`` for an unregistered class.
    """
    import keras

    from bundler.frameworks.keras_seam import saveable_base

    objects: dict[str, Any] = {}
    for name, obj in keras.saving.get_custom_objects().items():
        if covers(module.__name__, getattr(obj, "__module__", "") or ""):
            objects[name] = obj
    saveable = saveable_base()
    for name, obj in vars(module).items():
        if (
            inspect.isclass(obj)
            and issubclass(obj, saveable)
            and obj.__module__ == module.__name__
            and obj not in objects.values()
        ):
            objects[name] = obj
    return objects


# -- source identity ------------------------------------------------------------------------------


def package_base(module_name: str, origin: Path) -> Path:
    """The sys.path entry a module's file lies under (``site-packages`` for ``tcn/tcn.py``)."""
    depth = module_name.count(".") + (1 if origin.name == "__init__.py" else 0)
    return origin.parents[depth]


@dataclass(frozen=True)
class PinnedSources:
    """What the lock pins of a component's source files (``bundler.compat.source_hash``)."""

    sources: dict[str, str]  # path -> digest of its code under TOKENS_V1
    source_bytes: dict[str, str]  # path -> sha256 of its bytes: unchanged bytes, unchanged code
    untokenizable: dict[str, str]  # path -> why it is pinned by its bytes instead

    @property
    def source_sha256(self) -> str:
        return sources_digest(self.sources)


def pin_sources(files: Mapping[str, Path]) -> PinnedSources:
    """The digests of ``files`` ({path below the package's sys.path entry: file}) as the lock
    records them; a file that cannot be read is a ComponentError naming it."""
    sources, raw, untokenizable = {}, {}, {}
    for rel, path in sorted(files.items()):
        try:
            source = path.read_bytes()
        except OSError as error:
            raise ComponentError(
                f"cannot read the source file {rel!r} to pin it: {error.strerror or error}",
                path=path,
            ) from error
        sources[rel], why = source_digest(source)
        raw[rel] = hashlib.sha256(source).hexdigest()
        if why is not None:
            untokenizable[rel] = why
    return PinnedSources(sources, raw, untokenizable)


def sources_digest(table: Mapping[str, str]) -> str:
    """One sha256 for a component's sources table: the value the lock pins as source_sha256."""
    text = json.dumps(dict(table), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def installed_sources_digest(
    installed: InstalledComponent,
    table: Mapping[str, str],
    method: str | None = None,
    source_bytes: Mapping[str, str] | None = None,
) -> str | None:
    """The digest of the same files as the lock's ``sources`` table, as installed now, hashed the
    way the lock says (``method``: its ``source_hash``; None, the bytes as older locks pinned them).

    A file whose bytes are those the build hashed (``source_bytes``) has the pinned digest without
    being tokenized. None when it cannot be said (no source file, an unreadable table, a method
    this bundler does not know); a file that is gone counts as changed.
    """
    if installed.origin is None or not table or method not in (None, *SOURCE_HASHES):
        return None
    base = package_base(installed.module, installed.origin)
    known = source_bytes or {}
    now: dict[str, str] = {}
    for rel, pinned in table.items():
        if not isinstance(rel, str) or ".." in rel.split("/") or rel.startswith("/"):
            return None
        try:
            source = (base / rel).read_bytes()
        except OSError:
            now[rel] = "missing"
            continue
        raw = hashlib.sha256(source).hexdigest()
        if method is None:
            now[rel] = raw
        elif known.get(rel) == raw:
            now[rel] = pinned  # the bytes the build tokenized: the same tokens
        else:
            now[rel] = source_digest(source)[0]
    return sources_digest(now)
