"""What a served model takes and returns: the tensors of the Open Inference Protocol's metadata.

A client (tritonclient, KServe's InferenceClient) builds its request from ``/v2/models/NAME``, and
``bundle serve`` checks every request against the same description, so every model must be
described, whichever way it was written and loaded. Three sources, the first that knows wins:

1. **The loaded Keras model**: ``model.inputs`` / ``model.outputs`` (a Functional or Sequential
   model; a Sequential has no ``model.input`` structure, so only a Functional model's dict or list
   structure is read from there).
2. **The SavedModel's serving signature** (``saved_model/``): what the graph fallback serves, and
   what describes a subclassed model that Keras cannot (it records no inputs). It is read with
   TensorFlow's own protobuf classes, which a server has loaded anyway.
3. **The golden examples**: names, dtypes and shapes of the arrays the build ran (the first
   dimension is the batch, any size), when a bundle has no readable signature.

Names are the bundle's: inputs by their Keras (or signature) names, outputs by their dict keys,
else ``output_0``, ``output_1``, ... in order (``golden.named_outputs``), so that the Keras path and
the graph fallback describe a bundle alike. ``feed`` says how the model takes its inputs: one
array, a list in input order, or a dict by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from bundler.load.golden import read_arrays
from bundler.load.loader import LoadedBundle

Feed = Literal["single", "list", "dict"]


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as the Open Inference Protocol describes it (-1: any size)."""

    name: str
    datatype: str  # FP32, INT64, BYTES, ...
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class Description:
    """A model's inputs and outputs, where the description came from, and how to feed it."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    source: Literal["keras", "signature", "examples"]
    feed: Feed


def datatype(dtype: Any) -> str:
    """The protocol's name of a numpy, TensorFlow or Keras dtype (``FP32``, ``BYTES``, ...)."""
    import numpy as np

    name = getattr(dtype, "name", str(dtype))
    if name in ("string", "object") or name.startswith(("<U", "|S", "str", "bytes")):
        return "BYTES"
    if name == "bfloat16":
        return "BF16"
    numpy_dtype = np.dtype(getattr(dtype, "as_numpy_dtype", name))
    if numpy_dtype.kind in "USO":
        return "BYTES"
    return _NUMPY_TO_DATATYPE.get(str(numpy_dtype.name), str(numpy_dtype.name).upper())


_NUMPY_TO_DATATYPE = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
}


def _shape(shape: Any) -> tuple[int, ...]:
    dims = shape.as_list() if hasattr(shape, "as_list") else list(shape)
    return tuple(-1 if dim is None or int(dim) < 0 else int(dim) for dim in dims)


def describe(loaded: LoadedBundle) -> Description:
    """The model's inputs and outputs: from Keras, else the serving signature, else the examples.

    Raises nothing for a model none of them describes: its description is empty, and requests
    are then fed to it as sent (one input, positionally).
    """
    if loaded.mode == "graph":
        signature = loaded.model.signatures["serving_default"]
        return _from_signature_function(signature)
    found = _from_keras(loaded.model)
    if found is None:
        found = _from_saved_model(loaded)
    if found is None:
        found = _from_examples(loaded)
    return found or Description((), (), "examples", "single")


def _from_keras(model: Any) -> Description | None:
    try:
        tensors_in = list(model.inputs or [])
        tensors_out = list(model.outputs or [])
    except (AttributeError, ValueError):  # a subclassed model never called symbolically
        return None
    if not tensors_in or not tensors_out:
        return None
    structure_in = _structure(model, "input")
    structure_out = _structure(model, "output")
    if isinstance(structure_in, dict):  # a model called with a dict is fed by its keys
        named_in = [(str(key), tensor) for key, tensor in structure_in.items()]
        feed: Feed = "dict"
    else:
        named_in = [(str(tensor.name), tensor) for tensor in tensors_in]
        feed = "single" if len(tensors_in) == 1 else "list"
    if isinstance(structure_out, dict):
        named_out = [(str(key), tensor) for key, tensor in structure_out.items()]
    else:
        named_out = [(f"output_{index}", tensor) for index, tensor in enumerate(tensors_out)]
    return Description(
        tuple(TensorSpec(name, datatype(t.dtype), _shape(t.shape)) for name, t in named_in),
        tuple(TensorSpec(name, datatype(t.dtype), _shape(t.shape)) for name, t in named_out),
        "keras",
        feed,
    )


def _structure(model: Any, which: str) -> Any:
    """A Functional model's input or output structure (dict, list, tensor); None when Keras has
    none to give (a Sequential raises AttributeError for ``model.input`` after a load)."""
    try:
        return getattr(model, which)
    except Exception:
        return None


def _ordered_outputs(named: dict[str, Any]) -> list[str]:
    names = list(named)
    if all(name.startswith("output_") and name[7:].isdigit() for name in names):
        names.sort(key=lambda key: (len(key), key))  # positional outputs, in order
    return names


def _from_signature_function(signature: Any) -> Description:
    specs = signature.structured_input_signature[1]
    inputs = tuple(
        TensorSpec(name, datatype(spec.dtype), _shape(spec.shape)) for name, spec in specs.items()
    )
    by_name = signature.structured_outputs
    outputs = tuple(
        TensorSpec(name, datatype(by_name[name].dtype), _shape(by_name[name].shape))
        for name in _ordered_outputs(by_name)
    )
    return Description(inputs, outputs, "signature", "dict" if len(inputs) > 1 else "single")


def _from_saved_model(loaded: LoadedBundle) -> Description | None:
    """The ``serving_default`` signature of ``saved_model/saved_model.pb``, without loading it."""
    try:
        from tensorflow.core.protobuf import saved_model_pb2
        from tensorflow.python.framework import dtypes

        path = loaded.path / loaded.lock.artifacts.saved_model / "saved_model.pb"
        message = saved_model_pb2.SavedModel()
        message.ParseFromString(path.read_bytes())
        signature = message.meta_graphs[0].signature_def["serving_default"]
    except Exception:  # no artifact, unreadable, no such signature: the next source answers
        return None

    def spec(name: str, info: Any) -> TensorSpec:
        dims = () if info.tensor_shape.unknown_rank else [d.size for d in info.tensor_shape.dim]
        return TensorSpec(name, datatype(dtypes.as_dtype(info.dtype)), _shape(dims))

    inputs = tuple(spec(name, info) for name, info in sorted(signature.inputs.items()))
    outputs = tuple(
        spec(name, signature.outputs[name]) for name in _ordered_outputs(dict(signature.outputs))
    )
    if not inputs:
        return None
    return Description(inputs, outputs, "signature", "dict" if len(inputs) > 1 else "single")


def _from_examples(loaded: LoadedBundle) -> Description | None:
    """The first golden example's arrays: any batch size, the other sizes as the build ran."""
    for example in loaded.lock.examples:
        try:
            inputs = read_arrays(loaded.path, example.inputs)
            outputs = read_arrays(loaded.path, example.outputs)
        except Exception:
            continue
        if not inputs:
            continue

        def spec(name: str, array: Any) -> TensorSpec:
            return TensorSpec(name, datatype(array.dtype), (-1, *array.shape[1:]))

        return Description(
            tuple(spec(name, array) for name, array in inputs.items()),
            tuple(spec(name, outputs[name]) for name in _ordered_outputs(outputs)),
            "examples",
            "dict" if len(inputs) > 1 else "single",
        )
    return None
