"""The one place bundler reaches into Keras's private saving code: a model from its config, then
its weights read by HDF5 from a file in place.

Keras's public ``load_model`` takes a whole ``.keras`` file and copies its weights member before
reading it. A bundle's ``model.keras`` is laid out so that HDF5 can read the weights where they lie
(``keras_layout``), so the loader does the two steps ``load_model`` does, with the steps' own
functions from ``keras.src.saving.saving_lib``: ``_model_from_config`` builds the model,
``_load_state`` reads its variables from an ``H5IOStore``, opened read-only on ``model.keras``.

Building a model runs every variable's initialiser (random numbers for each kernel), and loading
then overwrites all of them: at 200M parameters the initialisers alone cost more than reading the
weights. ``variables_from_weights()`` lets the loader build a model whose variables start as
uninitialised memory (``tf.raw_ops.Empty``), through the TensorFlow backend's private
``Variable._initialize_with_initializer``; every variable the weights file does not assign is then
given its own initialiser's value, so the model is the one Keras would build, minus the work.

Those names are private: a Keras release may rename or reshape them. ``unavailable()`` and
``variables_unavailable()`` check each name and its parameters before anything is built, and the
loader uses Keras's public path (or its initialisers) whenever one reports a reason (logged at debug
level). Four smaller reaches sit here too, each with its own fallback: the input signature
``model.export()`` derives (``input_signature``), the base class of everything Keras serializes
(``saveable_base``), Keras's loader for a ``.keras`` file given as a stream (``load_archive``),
and the scope that makes a load's safe mode the one asked for (``safe_mode_scope``).
Nothing else in bundler touches Keras's private names.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

log = logging.getLogger("bundler")

# name -> the leading parameters bundler passes it, as Keras 3 declares them
_EXPECTED: dict[str, tuple[str, ...]] = {
    "_model_from_config": ("config_json", "custom_objects", "compile", "safe_mode"),
    "_load_state": (
        "saveable",
        "weights_store",
        "assets_store",
        "inner_path",
        "skip_mismatch",
        "visited_saveables",
        "failed_saveables",
        "error_msgs",
    ),
    "H5IOStore": ("path_or_io", "archive", "mode"),
    "_raise_loading_failure": ("error_msgs",),
}


# the TF backend's Variable methods the deferred initialisation wraps, as Keras 3 declares them
_VARIABLE_EXPECTED: dict[str, tuple[str, ...]] = {
    "_initialize_with_initializer": ("self", "initializer"),
    "_initialize": ("self", "value"),
    "_direct_assign": ("self", "value"),
}


def _mismatch(owner: Any, label: str, expected: dict[str, tuple[str, ...]]) -> str | None:
    """Why ``owner`` lacks one of the ``expected`` callables or its leading parameters, or None."""
    for name, wanted in expected.items():
        found = getattr(owner, name, None)
        if not callable(found):
            return f"{label}.{name} is missing"
        try:
            parameters = tuple(inspect.signature(found).parameters)
        except (TypeError, ValueError) as error:
            return f"{label}.{name} has no signature: {error}"
        if parameters[: len(wanted)] != wanted:
            return f"{label}.{name} takes {parameters}, not {wanted}"
    return None


def unavailable() -> str | None:
    """Why the in-place read cannot be used with the installed Keras, or None when it can."""
    try:
        from keras.src.saving import saving_lib
    except ImportError as error:
        return f"keras.src.saving.saving_lib cannot be imported: {error}"
    return _mismatch(saving_lib, "saving_lib", _EXPECTED)


def variables_unavailable() -> str | None:
    """Why variables cannot start uninitialised with the installed Keras, or None when they can."""
    try:
        import keras

        if keras.backend.backend() != "tensorflow":
            return f"the Keras backend is {keras.backend.backend()}, not tensorflow"
        from keras.src.backend.tensorflow.core import Variable
    except ImportError as error:
        return f"keras.src.backend.tensorflow.core cannot be imported: {error}"
    return _mismatch(Variable, "Variable", _VARIABLE_EXPECTED)


class _Deferral(threading.local):
    """The variables this thread's load created without running their initialiser, by id."""

    pending: dict[int, tuple[Any, Any]] | None = None


_deferral = _Deferral()
_patch_lock = threading.Lock()
_patch_users = 0
_originals: dict[str, Any] = {}


def _install(variable_class: Any) -> None:
    """Wrap the two Variable methods, once for all concurrent users; only the threads inside
    ``variables_from_weights`` see a difference (the others reach the originals)."""
    import tensorflow as tf

    initialize_with = variable_class._initialize_with_initializer
    direct_assign = variable_class._direct_assign

    def deferred_initialize(self: Any, initializer: Any) -> None:
        pending = _deferral.pending
        if pending is None:
            initialize_with(self, initializer)
            return
        try:
            dtype = tf.as_dtype(self._dtype)
            self._initialize(lambda: tf.raw_ops.Empty(shape=self._shape, dtype=dtype, init=False))
        except Exception:  # a dtype Empty does not make: the initialiser, as Keras would
            initialize_with(self, initializer)
            return
        pending[id(self)] = (self, initializer)

    def recorded_assign(self: Any, value: Any) -> None:
        pending = _deferral.pending
        if pending is not None:
            pending.pop(id(self), None)
        direct_assign(self, value)

    _originals.update(initialize_with=initialize_with, direct_assign=direct_assign)
    variable_class._initialize_with_initializer = deferred_initialize
    variable_class._direct_assign = recorded_assign


@contextlib.contextmanager
def variables_from_weights() -> Iterator[None]:
    """Within the block, this thread's new Keras variables are allocated but not initialised; on a
    normal exit every one of them that was not assigned since (by the weights) is given its
    initialiser's value. When ``variables_unavailable()`` gives a reason, the block runs Keras's
    initialisers as usual."""
    global _patch_users
    if _deferral.pending is not None:  # nested: the outer block settles
        yield
        return
    reason = variables_unavailable()
    if reason is not None:
        log.debug("variables are initialised as Keras does: %s", reason)
        yield
        return
    from keras.src.backend.tensorflow.core import Variable

    with _patch_lock:
        if _patch_users == 0:
            _install(Variable)
        _patch_users += 1
    pending: dict[int, tuple[Any, Any]] = {}
    _deferral.pending = pending
    try:
        yield
        _deferral.pending = None
        for variable, initializer in pending.values():
            variable.assign(initializer(variable.shape, dtype=variable.dtype))
        if pending:
            log.debug("%d variables not in the weights took their initialisers", len(pending))
    finally:
        _deferral.pending = None
        with _patch_lock:
            _patch_users -= 1
            if _patch_users == 0:
                Variable._initialize_with_initializer = _originals["initialize_with"]
                Variable._direct_assign = _originals["direct_assign"]


def load_in_place(
    config_json: str,
    weights: Path,
    *,
    custom_objects: dict[str, Any],
    safe_mode: bool,
    before_weights: Callable[[], None] | None = None,
) -> Any:
    """The compiled model of ``config_json`` with its variables read from the HDF5 file at
    ``weights`` (a ``.keras`` file laid out by ``keras_layout``: HDF5 skips the zip header before
    the weights). ``before_weights`` runs between the two steps (the loader waits there for the
    weights' digests). Call only after ``unavailable()`` returned None."""
    from keras.src.saving import saving_lib

    model = saving_lib._model_from_config(config_json, custom_objects, True, safe_mode)
    if before_weights is not None:
        before_weights()
    store = saving_lib.H5IOStore(weights, mode="r")  # h5py.File(weights, "r"): read-only
    failed: set[int] = set()
    errors: dict[int, Any] = {}
    try:
        saving_lib._load_state(
            model,
            weights_store=store,
            assets_store=None,
            inner_path="",
            visited_saveables=set(),
            failed_saveables=failed,
            error_msgs=errors,
        )
    finally:
        store.close()
    if failed:
        saving_lib._raise_loading_failure(errors)
    return model


@contextlib.contextmanager
def safe_mode_scope() -> Iterator[None]:
    """The load's own ``safe_mode`` argument in force, whatever the thread set before.

    Keras lets a thread-wide setting override the ``safe_mode`` argument of every load: after
    ``keras.config.enable_unsafe_deserialization()`` anywhere in the service, a load asked for
    safe mode would run Lambda bytecode. This resets the setting to Keras's default (none) for the
    load, so the argument decides, as it does in a fresh process: Keras applies it while it
    deserializes the config (a vocabulary path in a config is refused), and not while it reads
    the archive's own assets (the vocabulary file a tokenizer saved). The caller's setting is
    given back on the way out. A Keras without ``SafeModeScope`` keeps its own behaviour
    (logged)."""
    try:
        from keras.src.saving.serialization_lib import SafeModeScope
    except ImportError as error:
        log.debug("Keras's SafeModeScope is unavailable (%s): safe_mode by argument only", error)
        yield
        return
    with SafeModeScope(None):
        yield


def input_signature(model: Any) -> Any | None:
    """The input signature ``model.export()`` derives from the model's inputs, or None when the
    installed Keras has no such helper (the caller then leaves the export to Keras)."""
    try:
        from keras.src.export.export_utils import get_input_signature
    except ImportError:
        return None
    return get_input_signature(model)


def saveable_base() -> type:
    """The class every Keras-serializable object derives from (layers, losses, metrics, models...);
    ``keras.layers.Layer`` on a Keras without it, which covers the common case."""
    import keras

    try:
        from keras.src.saving.keras_saveable import KerasSaveable
    except ImportError:
        return cast(type, keras.layers.Layer)
    return cast(type, KerasSaveable)


def load_archive(stream: Any, *, custom_objects: dict[str, Any], safe_mode: bool) -> Any:
    """Keras's own loader on a ``.keras`` archive given as a binary stream (the public
    ``keras.saving.load_model`` wants a path ending in ``.keras``)."""
    from keras.src.saving import saving_lib

    return saving_lib.load_model(
        stream, custom_objects=custom_objects, compile=True, safe_mode=safe_mode
    )
