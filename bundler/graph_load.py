"""The graph path of a load: ``saved_model/`` loaded with TensorFlow, called by its signature.

``tf.saved_model.load`` reads the SavedModel the build exported beside ``model.keras``, and the
model is its ``serving_default`` signature: no custom code is imported, so a bundle whose
components cannot be loaded here can still be served (``policy="fallback"``). A graph can do more
than arithmetic, so it is served only when every op in it is one Keras exports contain
(``graph_scan``, checked before TensorFlow reads the file). ``graph_predict`` feeds the signature
the way ``Model.predict`` is called: one array, a list in input order, or a dict by input name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import LoadError
from .graph_scan import check_graph
from .keras_load import KERAS_LOCK
from .lock import Lock


def load_graph(root: Path, lock: Lock, unsafe: bool) -> tuple[Any, Any]:
    """The loaded SavedModel and its ``serving_default`` signature (LoadError if either fails)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    check_graph(root, lock.artifacts.saved_model, lock.files, unsafe=unsafe)  # before TF reads it
    import tensorflow as tf

    folder = root / lock.artifacts.saved_model
    with KERAS_LOCK:
        try:
            graph = tf.saved_model.load(str(folder))
        except Exception as error:
            raise LoadError(
                f"the SavedModel could not be loaded either: {type(error).__name__}: {error}",
                path=folder,
            ) from error
    signature = graph.signatures.get("serving_default")
    if signature is None:
        raise LoadError("the SavedModel has no serving_default signature", path=folder)
    return graph, signature


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
