"""Golden examples: inputs and the outputs they gave at build time, stored as ``.npz`` files.

Outputs are stored and compared by name, whatever the model returns: a dict keeps its keys, a
list or tuple becomes ``output_0``, ``output_1``, ..., a single tensor ``output_0``. The build
stores them so, ``load_bundle`` and ``bundle verify --smoke`` replay them so, and ``bundle serve``
names its responses so; one function says it for all of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def named_outputs(outputs: Any) -> dict[str, Any]:
    """Model outputs (a tensor, a list or a dict of them) as {name: numpy array}."""
    import numpy as np

    if isinstance(outputs, dict):
        return {str(key): np.asarray(value) for key, value in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return {f"output_{index}": np.asarray(value) for index, value in enumerate(outputs)}
    return {"output_0": np.asarray(outputs)}


def read_arrays(path: Path) -> dict[str, Any]:
    """The arrays of an ``.npz`` file by name; never unpickles (object arrays are refused)."""
    import numpy as np

    archive = np.load(path, allow_pickle=False)
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError("is not a .npz archive")
    with archive:
        return {key: archive[key] for key in archive.files}
