"""The SavedModel export: the graph a bundle serves without custom code, each weight stored once.

Everything here touches TensorFlow and Keras's export API, imported inside the functions.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

from bundler.build.reproducible import export_archive
from bundler.errors import BuildError
from bundler.manifest.reader import ManifestSource


def export_saved_model(model: Any, folder: Path, source: ManifestSource) -> None:
    try:
        with contextlib.redirect_stdout(sys.stderr):
            if not _export_single_copy(model, folder):
                model.export(str(folder), format="tf_saved_model", verbose=False)
    except Exception as error:
        raise BuildError(
            f"exporting the SavedModel failed: {type(error).__name__}: {error}",
            path=source.path,
            field="model.factory",
        ) from error


_COLLECTIONS = ("variables", "trainable_variables", "non_trainable_variables")


def _export_single_copy(model: Any, folder: Path) -> bool:
    """Export as ``model.export()`` does, but with each weight stored once; False if we cannot.

    On the TensorFlow backend ``model.export()`` tracks the Keras variables (``variables``) and,
    apart from them, the ``tf.Variable`` objects they wrap (``_all_variables``: what the serving
    function captures). TensorFlow deduplicates checkpoint entries by object, not by buffer, so
    every weight is written twice: a SavedModel twice the size of the weights, twice the export
    time, and twice the memory in every process that loads the graph (keras-team/keras#23553,
    open as of Keras 3.15). Registering the three collections with the wrapped ``tf.Variable``
    objects, through the public ``ExportArchive`` API, makes both references one object. The
    endpoint, its input signature and the tracked lookup tables are those of ``model.export()``;
    anything unexpected leaves the export to Keras.
    """
    import keras
    import tensorflow as tf

    from bundler.frameworks.keras_seam import input_signature

    signature = input_signature(model)  # the one model.export() derives from the model's inputs
    if signature is None or keras.backend.backend() != "tensorflow":
        return False
    collections = {name: [v.value for v in getattr(model, name)] for name in _COLLECTIONS}
    if not all(isinstance(v, tf.Variable) for vs in collections.values() for v in vs):
        return False
    archive = export_archive(model)  # a keras.export.ExportArchive, writing in the model's order
    archive.track(model)
    archive.add_endpoint("serve", model.__call__, signature)
    for name, variables in collections.items():
        archive.add_variable_collection(name, variables)
    archive.write_out(str(folder), verbose=False)
    return True
