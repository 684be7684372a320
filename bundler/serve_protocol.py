"""What ``bundle serve`` takes and returns: requests as arrays by input name, and back.

KServe parses the protocols: the Open Inference Protocol (v2: an ``InferRequest`` of named
tensors) and the v1 protocol (``{"instances": [...]}`` rows or ``{"inputs": ...}`` columns). This
module turns either into the arrays a bundle's model takes, runs ``LoadedBundle.predict`` through
one ``Serving`` (which checks names, dtypes and shapes against the model's, so a client's mistake
is a 400 naming why), and turns the arrays it returns into the response of the same protocol. It
also describes a model's tensors (``TensorSpec``, ``describe``) for the v2 metadata document.

Tensors are named as the bundle's golden examples name them: a model's inputs by their Keras (or
SavedModel signature) names, its outputs by their dict keys, else ``output_0``, ``output_1``, ...
in order, so a client sees the same names whether the Keras model or the graph fallback serves.

KServe reads ``sys.argv`` when it is imported (its own options); it is imported with the
arguments hidden from it, here and in ``bundler.serve``, whichever comes first.
"""

from __future__ import annotations

import json
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BundleError
from .golden import named_outputs
from .load import LoadedBundle

_argv, sys.argv = sys.argv, sys.argv[:1]
try:
    from kserve.errors import InvalidInput
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
    from kserve.utils.numpy_codec import from_np_dtype
finally:
    sys.argv = _argv


# -- what a model takes and returns ---------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as the Open Inference Protocol describes it (-1: any size)."""

    name: str
    datatype: str  # FP32, INT64, BYTES, ...
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def _datatype(dtype: Any) -> str:
    import numpy as np

    name = getattr(dtype, "name", str(dtype))
    if name in ("string", "object"):
        return "BYTES"
    if name == "bfloat16":
        return "BF16"
    found = from_np_dtype(np.dtype(getattr(dtype, "as_numpy_dtype", name)))
    return str(found) if found else name.upper()


def _shape(shape: Any) -> tuple[int, ...]:
    dims = shape.as_list() if hasattr(shape, "as_list") else list(shape)
    return tuple(-1 if dim is None else int(dim) for dim in dims)


def _positional_names(structure: Any, count: int) -> list[str]:
    if isinstance(structure, dict):
        return [str(key) for key in structure]
    return [f"output_{index}" for index in range(count)]


def describe(loaded: LoadedBundle) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The model's inputs and outputs, from the Keras model or the SavedModel signature.

    A subclassed Keras model that was never called symbolically has no recorded inputs: it is
    described with empty lists, and fed its single input positionally.
    """
    if loaded.mode == "graph":
        signature = loaded.model.signatures["serving_default"]
        specs = signature.structured_input_signature[1]
        inputs = tuple(
            TensorSpec(name, _datatype(spec.dtype), _shape(spec.shape))
            for name, spec in specs.items()
        )
        outputs_by_name = signature.structured_outputs
        names = list(outputs_by_name)
        if all(name.startswith("output_") and name[7:].isdigit() for name in names):
            names.sort(key=lambda k: (len(k), k))  # positional outputs, in order
        outputs = tuple(
            TensorSpec(
                name, _datatype(outputs_by_name[name].dtype), _shape(outputs_by_name[name].shape)
            )
            for name in names
        )
        return inputs, outputs
    model = loaded.model
    try:
        tensors_in = list(model.inputs or [])
        tensors_out = list(model.outputs or [])
        structure_in = model.input if tensors_in else None
        structure_out = model.output if tensors_out else None
    except (AttributeError, ValueError):
        return (), ()
    if isinstance(structure_in, dict):  # a model called with a dict is fed by its keys
        named_in = [(str(key), tensor) for key, tensor in structure_in.items()]
    else:
        named_in = [(str(tensor.name), tensor) for tensor in tensors_in]
    inputs = tuple(TensorSpec(name, _datatype(t.dtype), _shape(t.shape)) for name, t in named_in)
    names = _positional_names(structure_out, len(tensors_out))
    if isinstance(structure_out, dict):
        tensors_out = [structure_out[name] for name in names]
    outputs = tuple(
        TensorSpec(name, _datatype(t.dtype), _shape(t.shape))
        for name, t in zip(names, tensors_out, strict=True)
    )
    return inputs, outputs


# -- one loaded bundle, as served -----------------------------------------------------------------


@dataclass(frozen=True)
class Serving:
    """What one model name serves right now: never changed, only replaced whole by a reload."""

    source: Path  # the path as given, maybe a symlink (``current``)
    target: Path  # where it pointed when loaded
    loaded: LoadedBundle
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def name(self) -> str:
        return self.loaded.lock.name

    @property
    def version(self) -> str:
        return self.loaded.lock.version

    @property
    def digest(self) -> str:
        return self.loaded.digest

    def metadata(self) -> dict[str, Any]:
        """The v2 model metadata document, with the bundle's identity in ``parameters``."""
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": "keras" if self.loaded.mode == "keras" else "tensorflow_savedmodel",
            "inputs": [spec.to_json() for spec in self.inputs],
            "outputs": [spec.to_json() for spec in self.outputs],
            "parameters": {
                "digest": self.digest,
                "mode": self.loaded.mode,
                "policy": self.loaded.compatibility.policy,
                "bundle": str(self.target),
            },
        }

    def run(self, named: dict[str, Any]) -> dict[str, Any]:
        """Run the model on arrays by input name; returns arrays by output name."""
        import numpy as np

        if self.inputs:
            expected = [spec.name for spec in self.inputs]
            unknown = sorted(set(named) - set(expected))
            missing = [name for name in expected if name not in named]
            if len(expected) == 1 and len(named) == 1 and unknown:
                named = {expected[0]: next(iter(named.values()))}  # one input: any name will do
            elif unknown or missing:
                raise InvalidInput(
                    f"model {self.name!r} takes inputs {expected}; got {sorted(named)}"
                )
            arrays = {
                spec.name: np.asarray(named[spec.name], dtype=_numpy_dtype(spec.datatype))
                for spec in self.inputs
            }
            for spec in self.inputs:
                shape = arrays[spec.name].shape
                if len(shape) != len(spec.shape) or any(
                    want not in (-1, got) for want, got in zip(spec.shape, shape, strict=False)
                ):
                    raise InvalidInput(
                        f"input {spec.name!r} has shape {list(shape)}; model {self.name!r} "
                        f"takes {list(spec.shape)} (-1: any size)"
                    )
        elif len(named) == 1:
            arrays = dict(named)
        else:
            raise InvalidInput(f"model {self.name!r} takes one input; got {sorted(named)}")
        feed: Any = next(iter(arrays.values())) if len(arrays) == 1 else arrays
        if len(arrays) > 1 and self.loaded.mode == "keras":
            structure = getattr(self.loaded.model, "input", None)
            if isinstance(structure, (list, tuple)):
                feed = [arrays[spec.name] for spec in self.inputs]
        try:
            return named_outputs(self.loaded.predict(feed))
        except BundleError as error:
            raise InvalidInput(str(error)) from error
        except (ValueError, TypeError) as error:
            raise InvalidInput(_short(f"{type(error).__name__}: {error}")) from error
        except Exception as error:
            # TensorFlow's InvalidArgumentError (a wrong shape) is no subclass of ValueError
            if type(error).__name__ == "InvalidArgumentError":
                raise InvalidInput(_short(f"{type(error).__name__}: {error}")) from error
            raise


def _numpy_dtype(datatype: str) -> Any:
    from kserve.utils.numpy_codec import to_np_dtype

    return to_np_dtype(datatype) if datatype != "BF16" else "float32"


def _short(text: str, limit: int = 600) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- the protocols --------------------------------------------------------------------------------


def v2_inputs(request: InferRequest) -> dict[str, Any]:
    """A v2 request's tensors as arrays by name."""
    return {tensor.name: tensor.as_numpy() for tensor in request.inputs}


def v2_response(
    request: InferRequest, results: dict[str, Any], model: str, version: str
) -> InferResponse:
    """Arrays by output name as the v2 response to ``request`` (binary if it asked for that)."""
    outputs = []
    for name, array in results.items():
        output = InferOutput(name, list(array.shape), from_np_dtype(array.dtype) or "BYTES")
        output.set_data_from_numpy(array, binary_data=request.use_binary_outputs)
        outputs.append(output)
    return InferResponse(
        response_id=request.id or str(uuid.uuid4()),
        model_name=model,
        model_version=version,
        infer_outputs=outputs,
        use_binary_outputs=request.use_binary_outputs,
    )


def v1_request(payload: Any) -> dict[str, Any]:
    """A v1 request body as the JSON object it must be."""
    if isinstance(payload, (bytes, str)):  # JSON sent without a JSON content type
        try:
            payload = json.loads(payload)
        except ValueError as error:
            raise InvalidInput(f"the request body is not JSON: {error}") from None
    if not isinstance(payload, dict):
        raise InvalidInput("expected a JSON object with 'instances' or 'inputs'")
    return payload


def v1_inputs(payload: dict[str, Any], serving: Serving) -> dict[str, Any]:
    """A v1 request's arrays by input name: rows (``instances``) or columns (``inputs``)."""
    import numpy as np

    if "instances" in payload:
        instances = payload["instances"]
        if not isinstance(instances, list) or not instances:
            raise InvalidInput("'instances' must be a non-empty list")
        if all(isinstance(row, dict) for row in instances):
            names = list(instances[0])
            if any(list(row) != names for row in instances):
                raise InvalidInput("every instance must name the same inputs")
            return {name: np.asarray([row[name] for row in instances]) for name in names}
        return {_single_input(serving): np.asarray(instances)}
    if "inputs" in payload:
        inputs = payload["inputs"]
        if isinstance(inputs, dict):
            return {str(name): np.asarray(value) for name, value in inputs.items()}
        return {_single_input(serving): np.asarray(inputs)}
    raise InvalidInput("expected a JSON object with 'instances' or 'inputs'")


def _single_input(serving: Serving) -> str:
    if len(serving.inputs) > 1:
        names = [spec.name for spec in serving.inputs]
        raise InvalidInput(f"model {serving.name!r} takes inputs {names}: pass a dict by name")
    return serving.inputs[0].name if serving.inputs else "input_0"


def v1_outputs(results: dict[str, Any], rows: bool) -> Any:
    """The v1 ``predictions``: a row per instance when the request sent rows, else columns."""
    if len(results) == 1:
        return next(iter(results.values())).tolist()
    if not rows:
        return {name: array.tolist() for name, array in results.items()}
    count = len(next(iter(results.values())))
    return [
        {name: array[index].tolist() for name, array in results.items()} for index in range(count)
    ]
