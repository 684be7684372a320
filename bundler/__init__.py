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

from .errors import (
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
    "build_bundle": "build",
    "Bundle": "build",
    "verify_bundle": "smoke",
    "VerifyReport": "verify",
    "load_bundle": "load",
    "LoadedBundle": "load",
    "adapter": "adapters",
    "read_manifest": "manifest",
    "diff_bundles": "diff",
    "BundleDiff": "diff",
    "inspect_bundle": "inspection",
    "InspectReport": "inspection",
    "PushResult": "transfer",
    "push": "oci",
    "pull": "oci",
    "Lock": "lock",
    "PullResult": "transfer",
}

if TYPE_CHECKING:
    from .adapters import adapter
    from .build import Bundle, build_bundle
    from .diff import BundleDiff, diff_bundles
    from .inspection import InspectReport, inspect_bundle
    from .load import LoadedBundle, load_bundle
    from .lock import Lock
    from .manifest import read_manifest
    from .oci import pull, push
    from .smoke import verify_bundle
    from .transfer import PullResult, PushResult
    from .verify import VerifyReport


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
