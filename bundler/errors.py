"""The errors bundler raises: one base class, one subclass per thing that can go wrong.

Every error names what it is about in the user's terms: the file, the field path inside it
(``components[1].version``) and the offending value. The command line prints ``str(error)`` and
exits with ``error.exit_code``: 2 for bad input (a user mistake), 1 for a failed operation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class BundleError(Exception):
    """Base class of every error bundler raises on purpose."""

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        field: str | None = None,
        value: Any = None,
        details: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = str(path) if path is not None else None
        self.field = field
        self.value = value
        self.details = list(details or [])

    def __str__(self) -> str:
        where = self.path or ""
        if self.field:
            where = f"{where}: {self.field}" if where else self.field
        head = f"{where}: {self.message}" if where else self.message
        if self.details:
            return head + "\n" + "\n".join(f"  {line}" for line in self.details)
        return head


class ManifestError(BundleError):
    """The manifest cannot be read or does not validate (bad input)."""

    exit_code = 2


class UsageError(BundleError):
    """The command was called wrongly: a missing path, an existing output, a bad option."""

    exit_code = 2


class MissingDependencyError(BundleError):
    """A command needs an optional dependency (TensorFlow, Keras) that is not installed; the
    message names the extra to install."""

    exit_code = 2


class ComponentError(BundleError):
    """A component module cannot be imported, or its installed version does not fit."""


class BuildError(BundleError):
    """The model factory, the weights, saving or exporting failed during a build."""


class LockError(BundleError):
    """``bundle.lock.json`` is missing, unreadable, of an unknown format or does not validate."""


class IntegrityError(BundleError):
    """The bundle's files do not match its lock: changed, missing, extra or unsafe files."""


class IncompatibleBundleError(BundleError):
    """The installed components or frameworks cannot load the bundle under the chosen policy."""

    def __init__(self, message: str, *, plan: Any = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.plan = plan


class UnsafeBundleError(BundleError):
    """Loading would import a module the lock does not name, or run code Keras calls unsafe."""


class LoadError(BundleError):
    """Keras or TensorFlow could not load the bundle's model (converted from their exceptions)."""


class AdapterError(BundleError):
    """A registered adapter failed while migrating a serialized config."""


class ExampleMismatchError(BundleError):
    """Replaying a golden example gave outputs outside its rtol/atol."""


class SignatureError(BundleError):
    """A signature is missing, malformed, or not made by a trusted key."""


class RegistryError(BundleError):
    """The registry could not be reached, refused us, or has no such artifact."""


class BuildWarning(UserWarning):
    """Something about a build worth knowing that does not stop it (an unused component, ...)."""


class FallbackWarning(UserWarning):
    """load_bundle served the SavedModel graph because the full Keras model could not be loaded."""


class UnsafeLoadWarning(UserWarning):
    """load_bundle was asked to turn Keras safe_mode off."""
