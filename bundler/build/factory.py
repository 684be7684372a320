"""The model a manifest names: its factory resolved, called with ``model.args``, weights loaded.

``model.factory`` is ``module:attribute`` (dotted attributes allowed), imported from the
manifest's ``paths`` or the installed packages while the build runs. What it returns must be a
built ``keras.Model`` with known inputs, since the SavedModel's signature is derived from them;
``model.weights``, when given, is loaded into it. Every failure names the manifest field it comes
from: an import error or a missing attribute is a ManifestError, anything the user's code raises
is a BuildError that says which call raised what.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

from bundler.errors import BuildError, ManifestError
from bundler.manifest.reader import ManifestSource


def import_keras() -> Any:
    """Keras, with TensorFlow imported beside it; a BuildError when either is missing."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import keras
        import tensorflow  # noqa: F401 - export needs it; fail here with a clear message
    except ImportError as error:
        raise BuildError(f"building needs TensorFlow and Keras: {error}") from error
    return keras


def _resolve(factory: str, source: ManifestSource) -> Callable[..., Any]:
    module_name, _, attribute = factory.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise ManifestError(
            f"cannot import {module_name!r}: no module named {error.name!r} "
            "(add its folder to 'paths', or install it)",
            path=source.path,
            field="model.factory",
            value=factory,
        ) from error
    except Exception as error:
        raise BuildError(
            f"importing {module_name!r} failed: {type(error).__name__}: {error}",
            path=source.path,
            field="model.factory",
            value=factory,
        ) from error
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ManifestError(
                f"{module_name!r} has no attribute {attribute!r}",
                path=source.path,
                field="model.factory",
                value=factory,
            )
        target = getattr(target, part)
    if not callable(target):
        raise ManifestError(
            f"{factory!r} is not callable", path=source.path, field="model.factory", value=factory
        )
    return target  # type: ignore[no-any-return, unused-ignore]


def make_model(source: ManifestSource, keras: Any) -> Any:
    """The manifest's model: the factory called with ``model.args``, ``model.weights`` loaded,
    checked to be a ``keras.Model`` whose inputs are known."""
    spec = source.manifest.model
    factory = _resolve(spec.factory, source)
    try:
        model = factory(**spec.args)
    except TypeError as error:
        raise BuildError(
            f"calling {spec.factory} failed: {error}",
            path=source.path,
            field="model.args",
            value=spec.args,
        ) from error
    except Exception as error:
        raise BuildError(
            f"the model factory {spec.factory} raised {type(error).__name__}: {error}",
            path=source.path,
            field="model.factory",
        ) from error
    if not isinstance(model, keras.Model):
        raise BuildError(
            f"the model factory {spec.factory} returned {type(model).__name__}, not a keras.Model",
            path=source.path,
            field="model.factory",
        )
    if spec.weights:
        weights = source.root / spec.weights
        if not weights.is_file():
            raise ManifestError(
                "weights file does not exist",
                path=source.path,
                field="model.weights",
                value=spec.weights,
            )
        try:
            model.load_weights(weights)
        except Exception as error:
            raise BuildError(
                f"loading weights failed: {type(error).__name__}: {error}",
                path=source.path,
                field="model.weights",
                value=spec.weights,
            ) from error
    if not model.built or not getattr(model, "inputs", None):
        raise BuildError(
            "the model has no known inputs; build it in the factory (keras.Input, or call it on "
            "sample data) so that its SavedModel signature can be derived",
            path=source.path,
            field="model.factory",
        )
    return model
