"""bundler: a Keras/TensorFlow model and its custom code as a checksummed, self-describing bundle.

The public API. Names are imported on first use, so ``import bundler`` stays cheap and never
imports TensorFlow, pydantic or jsonschema until a function that needs them is called. Every error
bundler raises is a ``BundleError`` subclass and every warning it issues is exported here, as is
``Lock``, the frozen value object every reader gets for ``bundle.lock.json``; the
``Literal`` vocabularies (``Policy``, ``Mode``, ``Status``, ``ProblemKind``) are in
``bundler.types``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bundler.errors import (
    AdapterError,
    BuildError,
    BuildWarning,
    BundleError,
    ComponentError,
    ExampleMismatchError,
    FallbackWarning,
    IncompatibleBundleError,
    IntegrityError,
    LoadError,
    LockError,
    ManifestError,
    MissingDependencyError,
    RegistryError,
    SignatureError,
    UnsafeBundleError,
    UnsafeLoadWarning,
    UsageError,
)

__version__ = "0.1.0"

__all__ = [
    "AdapterError",
    "BuildError",
    "BuildWarning",
    "Bundle",
    "BundleDiff",
    "BundleError",
    "ComponentError",
    "ExampleMismatchError",
    "FallbackWarning",
    "IncompatibleBundleError",
    "InspectReport",
    "IntegrityError",
    "LoadError",
    "LoadedBundle",
    "Lock",
    "LockError",
    "ManifestError",
    "MissingDependencyError",
    "PullResult",
    "PushResult",
    "RegistryError",
    "SignatureError",
    "UnsafeBundleError",
    "UnsafeLoadWarning",
    "UsageError",
    "VerifyReport",
    "__version__",
    "adapter",
    "build_bundle",
    "diff_bundles",
    "inspect_bundle",
    "load_bundle",
    "pull",
    "push",
    "read_manifest",
    "verify_bundle",
]

_LAZY = {
    "build_bundle": "build.pipeline",
    "Bundle": "build.pipeline",
    "verify_bundle": "load.smoke",
    "VerifyReport": "verify.checks",
    "load_bundle": "load.loader",
    "LoadedBundle": "load.loader",
    "adapter": "compat.adapters",
    "read_manifest": "manifest.reader",
    "diff_bundles": "diff.bundles",
    "BundleDiff": "diff.bundles",
    "inspect_bundle": "verify.inspection",
    "InspectReport": "verify.inspection",
    "PushResult": "registry.transfer",
    "push": "registry.api",
    "pull": "registry.api",
    "Lock": "lock.model",
    "PullResult": "registry.transfer",
}

if TYPE_CHECKING:
    from bundler.build.pipeline import Bundle, build_bundle
    from bundler.compat.adapters import adapter
    from bundler.diff.bundles import BundleDiff, diff_bundles
    from bundler.load.loader import LoadedBundle, load_bundle
    from bundler.load.smoke import verify_bundle
    from bundler.lock.model import Lock
    from bundler.manifest.reader import read_manifest
    from bundler.registry.api import pull, push
    from bundler.registry.transfer import PullResult, PushResult
    from bundler.verify.checks import VerifyReport
    from bundler.verify.inspection import InspectReport, inspect_bundle


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bundler' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
