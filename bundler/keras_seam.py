"""The one place bundler reaches into Keras's private saving code: a model from its config, then
its weights read by HDF5 from a file in place.

Keras's public ``load_model`` takes a whole ``.keras`` file and copies its weights member before
reading it. A bundle's ``model.keras`` is laid out so that HDF5 can read the weights where they lie
(``keras_layout``), so the loader does the two steps ``load_model`` does, with the steps' own
functions from ``keras.src.saving.saving_lib``: ``_model_from_config`` builds the model,
``_load_state`` reads its variables from an ``H5IOStore``, opened read-only on ``model.keras``.

Those names are private: a Keras release may rename or reshape them. ``unavailable()`` checks each
name and its parameters before anything is built, and the loader uses Keras's public path whenever
it reports a reason (logged at debug level). Nothing else in bundler touches these names.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def unavailable() -> str | None:
    """Why the in-place read cannot be used with the installed Keras, or None when it can."""
    try:
        from keras.src.saving import saving_lib
    except ImportError as error:
        return f"keras.src.saving.saving_lib cannot be imported: {error}"
    for name, wanted in _EXPECTED.items():
        found = getattr(saving_lib, name, None)
        if not callable(found):
            return f"saving_lib.{name} is missing"
        try:
            parameters = tuple(inspect.signature(found).parameters)
        except (TypeError, ValueError) as error:
            return f"saving_lib.{name} has no signature: {error}"
        if parameters[: len(wanted)] != wanted:
            return f"saving_lib.{name} takes {parameters}, not {wanted}"
    return None


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
