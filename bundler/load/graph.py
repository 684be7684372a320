"""The graph path of a load: ``saved_model/`` loaded with TensorFlow, called by its signature.

``tf.saved_model.load`` reads the SavedModel the build exported beside ``model.keras``, and the
model is its ``serving_default`` signature: no custom code is imported, so a bundle whose
components cannot be loaded here can still be served (``policy="fallback"``). A graph can do more
than arithmetic, so it is served only when every op in it is one Keras exports contain
(``graph_scan``, checked before TensorFlow reads the file). The op libraries the lock names
(tensorflow-text for a keras_hub tokenizer: ``op_libraries``) are imported first, and nothing
else: TensorFlow knows their ops only then. ``graph_predict`` feeds the signature
the way ``Model.predict`` is called: one array, a list in input order, or a dict by input name.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from bundler.compat.op_libraries import import_op_libraries, install_hint, library_of
from bundler.errors import LoadError
from bundler.load.keras import KERAS_LOCK
from bundler.lock.model import Lock, LockedOpLibrary
from bundler.scans.graph import check_graph, lock_libraries


def load_graph(root: Path, lock: Lock, unsafe: bool) -> tuple[Any, Any]:
    """The loaded SavedModel and its ``serving_default`` signature (LoadError if either fails)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    folder = root / lock.artifacts.saved_model
    modules = lock_libraries(lock)
    check_graph(root, lock.artifacts.saved_model, lock.files, modules, unsafe=unsafe)
    try:  # before TensorFlow reads the graph: it knows the libraries' ops only once imported
        import_op_libraries(modules)
    except (ImportError, ValueError) as error:
        raise LoadError(
            f"the SavedModel's op libraries cannot be loaded: {error}",
            path=folder,
            details=[_install_hint(library) for library in lock.op_libraries],
        ) from error
    import tensorflow as tf

    with KERAS_LOCK:
        try:
            graph = tf.saved_model.load(str(folder))
        except Exception as error:
            raise LoadError(
                f"the SavedModel could not be loaded either: {type(error).__name__}: {error}"
                + _missing_library(str(error)),
                path=folder,
            ) from error
    signature = graph.signatures.get("serving_default")
    if signature is None:
        raise LoadError("the SavedModel has no serving_default signature", path=folder)
    return graph, signature


def _install_hint(library: LockedOpLibrary) -> str:
    import tensorflow as tf

    return f"{library.distribution}: {install_hint(library.distribution, tf.__version__)}"


def _missing_library(message: str) -> str:
    """What to install, when TensorFlow says a known library's op is not registered."""
    found = re.search(r"Op type not registered '([^']+)'", message)
    library = library_of(found.group(1)) if found else None
    if library is None:
        return ""
    import tensorflow as tf

    return (
        f"; the op is {library.distribution}'s: "
        f"{install_hint(library.distribution, tf.__version__)}"
    )


def graph_predict(signature: Any, x: Any) -> Any:
    """Run the signature on ``x`` (an array, a list in input order, or a dict by input name).

    Returns numpy: the array, or a list of them for several outputs, as Keras numbers them; a dict
    by output name when the signature names its outputs otherwise."""
    import numpy as np
    import tensorflow as tf

    specs = signature.structured_input_signature[1]
    if isinstance(x, dict):
        feed = dict(x)
    elif len(specs) == 1:
        feed = {next(iter(specs)): x}
    elif isinstance(x, (list, tuple)) and len(x) == len(specs):
        feed = dict(zip(specs, x, strict=False))  # positional inputs, in the model's input order
    else:
        raise LoadError(f"the model takes inputs {sorted(specs)}; pass a dict by name")
    missing = set(specs) - set(feed)
    if missing:
        raise LoadError(f"missing inputs {sorted(missing)}; the model takes {sorted(specs)}")
    tensors = {
        name: tf.convert_to_tensor(np.asarray(value), dtype=specs[name].dtype)
        for name, value in feed.items()
    }
    outputs = {key: value.numpy() for key, value in signature(**tensors).items()}
    names = sorted(outputs, key=lambda k: (len(k), k))
    if all(name.startswith("output_") and name[7:].isdigit() for name in names):
        ordered = [outputs[name] for name in names]
        return ordered[0] if len(ordered) == 1 else ordered
    return outputs
