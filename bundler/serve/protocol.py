"""Requests and responses of ``bundle serve``: checked arrays in, named arrays out.

KServe parses the protocols: the Open Inference Protocol (v2, JSON or binary over HTTP, and gRPC:
an ``InferRequest`` of named tensors) and the v1 protocol (``{"instances": [...]}`` rows or
``{"inputs": ...}`` columns). This module turns either into the arrays a bundle's model takes,
**checked against the model's description** (``serve_describe``) before any array is built, and
turns the arrays the model returns into the response of the same protocol.

Every request a model cannot take is an ``InvalidInput`` (HTTP 400, gRPC ``INVALID_ARGUMENT``)
whose message names the input and says what is wrong in the protocol's words: a name the model
does not take, a datatype it does not take (strings or ``BYTES`` to a number input), a data count
that does not fill the declared shape (checked by arithmetic, so a declared shape of 10⁸ rows
allocates nothing), ragged rows, a shape the model does not take. No framework text reaches a
client: what the model raises on input that passed these checks is logged by the server, and the
client is told the model could not run on it. Names sent by a client are quoted with ``repr``,
so that control characters in them reach nobody's terminal.

KServe reads ``sys.argv`` when it is imported (its own options); it is imported with the
arguments hidden from it, here and in ``bundler.serve.model``, whichever comes first.
"""

from __future__ import annotations

import json
import math
import sys
import uuid
from typing import Any

from bundler.serve.describe import Description, TensorSpec, datatype

_argv, sys.argv = sys.argv, sys.argv[:1]
try:
    from kserve.errors import InvalidInput
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
finally:
    sys.argv = _argv

DATATYPES = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BF16": "float32",  # numpy has no bfloat16: sent as FP32, the model casts
    "BYTES": "object",
}


def _numeric(datatype_name: str) -> bool:
    return datatype_name not in ("BYTES",)


# -- checking a request against the model's description -------------------------------------------


def check_inputs(named: dict[str, Any], description: Description, model: str) -> dict[str, Any]:
    """Arrays by the model's input names, each of the model's dtype and a shape it takes.

    ``named`` maps a sent name to an array (v1) or to a ``Sent`` tensor (v2), whose data is only
    turned into an array once its datatype and shape are known to fit.
    """
    specs = description.inputs
    if not specs:  # a model nothing describes: fed as sent, one input
        if len(named) != 1:
            raise InvalidInput(f"model {model!r} takes one input; got {sorted(named)}")
        ((name, value),) = named.items()
        array = value.array(None) if isinstance(value, Sent) else _from_json(name, value)
        return {name: array}
    expected = [spec.name for spec in specs]
    if len(specs) == 1 and len(named) == 1:
        named = {expected[0]: next(iter(named.values()))}  # one input: any name will do
    unknown = sorted(set(named) - set(expected))
    missing = [name for name in expected if name not in named]
    if unknown or missing:
        raise InvalidInput(f"model {model!r} takes inputs {expected}; got {sorted(named)}")
    arrays = {}
    for spec in specs:
        value = named[spec.name]
        if isinstance(value, Sent):
            array = value.array(spec, model)
        else:
            array = _cast(spec, _from_json(spec.name, value), model)
        _check_shape(spec, array.shape, model)
        arrays[spec.name] = array
    rows = {name: array.shape[0] for name, array in arrays.items() if array.ndim}
    if len(set(rows.values())) > 1:
        raise InvalidInput(f"model {model!r} takes as many rows in every input; got {rows}")
    return arrays


def _check_shape(spec: TensorSpec, shape: tuple[int, ...], model: str) -> None:
    if len(shape) != len(spec.shape) or any(
        want not in (-1, got) for want, got in zip(spec.shape, shape, strict=False)
    ):
        raise InvalidInput(
            f"input {spec.name!r} has shape {list(shape)}; model {model!r} takes "
            f"{list(spec.shape)} (-1: any size)"
        )
    if shape and shape[0] == 0:
        raise InvalidInput(f"input {spec.name!r} has no rows")


def _from_json(name: str, data: Any) -> Any:
    """Nested JSON lists as an array; ragged rows and mixed values refused by name."""
    import numpy as np

    try:
        array = np.asarray(data)
    except ValueError:
        raise InvalidInput(f"input {name!r} is ragged: its rows differ in length") from None
    if array.dtype.kind == "O":
        raise InvalidInput(f"input {name!r} holds values that are neither numbers nor strings")
    return array


def _cast(spec: TensorSpec, array: Any, model: str) -> Any:
    import numpy as np

    kind = array.dtype.kind
    if not _numeric(spec.datatype):
        if kind not in "USO":
            raise InvalidInput(f"input {spec.name!r} holds numbers; model {model!r} takes BYTES")
        return array.astype(object)
    if kind in "US":
        raise InvalidInput(
            f"input {spec.name!r} holds strings; model {model!r} takes {spec.datatype}"
        )
    return array.astype(np.dtype(DATATYPES.get(spec.datatype, "float32")), copy=False)


class Sent:
    """One v2 tensor as sent: name, datatype, shape and its JSON data or raw bytes."""

    def __init__(self, name: str, datatype_name: str, shape: Any, data: Any, raw: Any) -> None:
        self.name = name
        self.datatype = str(datatype_name).upper()
        self.shape = shape
        self.data = data
        self.raw = raw

    def _declared_shape(self) -> tuple[int, ...]:
        shape = self.shape
        if not isinstance(shape, (list, tuple)) or not all(
            isinstance(dim, int) and not isinstance(dim, bool) for dim in shape
        ):
            raise InvalidInput(f"input {self.name!r} has shape {shape!r}; sizes are integers")
        if any(dim < 0 for dim in shape):
            raise InvalidInput(
                f"input {self.name!r} has shape {list(shape)}; sizes cannot be negative"
            )
        return tuple(shape)

    def array(self, spec: TensorSpec | None, model: str = "") -> Any:
        """The tensor as an array of the model's dtype, after the datatype, the shape and the
        data count are checked (the count by arithmetic: nothing is allocated for a lie)."""
        import numpy as np

        if self.datatype not in DATATYPES:
            raise InvalidInput(f"input {self.name!r} has datatype {self.datatype!r}, none of "
                               f"the protocol's: {', '.join(DATATYPES)}")  # fmt: skip
        shape = self._declared_shape()
        if spec is not None:
            if _numeric(spec.datatype) != _numeric(self.datatype):
                raise InvalidInput(
                    f"input {self.name!r} is {self.datatype}; model {model!r} takes {spec.datatype}"
                )
            _check_shape(spec, shape, model)
        count = math.prod(shape)
        if self.raw is not None:
            if self.datatype == "BYTES":
                from kserve.utils.numpy_codec import deserialize_bytes_tensor

                try:
                    array = deserialize_bytes_tensor(self.raw)
                except Exception:
                    raise InvalidInput(f"input {self.name!r} is not valid BYTES data") from None
                if array.size != count:
                    raise InvalidInput(
                        f"input {self.name!r} has {array.size} values; shape {list(shape)} "
                        f"holds {count}"
                    )
                return array.reshape(shape)
            itemsize = np.dtype(DATATYPES[self.datatype]).itemsize
            if len(self.raw) != count * itemsize:
                raise InvalidInput(
                    f"input {self.name!r} has {len(self.raw)} bytes; shape {list(shape)} of "
                    f"{self.datatype} takes {count * itemsize}"
                )
            array = np.frombuffer(self.raw, dtype=DATATYPES[self.datatype]).reshape(shape)
        else:
            array = _from_json(self.name, self.data if self.data is not None else [])
            if array.size != count:
                raise InvalidInput(
                    f"input {self.name!r} has {array.size} values; shape {list(shape)} "
                    f"holds {count}"
                )
            array = array.reshape(shape)
            if spec is None:
                return array
            return _cast(spec, array, model)
        if spec is None:
            return array
        return array.astype(np.dtype(DATATYPES.get(spec.datatype, "float32")), copy=False)


# -- the protocols --------------------------------------------------------------------------------


def v2_inputs(request: InferRequest) -> dict[str, Any]:
    """A v2 request's tensors by name, not yet arrays (``check_inputs`` makes them)."""
    named: dict[str, Any] = {}
    for tensor in request.inputs:
        if tensor.name in named:
            raise InvalidInput(f"input {tensor.name!r} is sent twice")
        named[tensor.name] = Sent(
            tensor.name,
            tensor.datatype,
            tensor.shape,
            tensor.data if getattr(tensor, "_raw_data", None) is None else None,
            getattr(tensor, "_raw_data", None),
        )
    return named


def v2_response(
    request: InferRequest, results: dict[str, Any], model: str, version: str
) -> InferResponse:
    """Arrays by output name as the v2 response to ``request`` (binary if it asked for that),
    only the outputs it asked for when it named some."""
    wanted = [output.name for output in request.request_outputs or []]
    unknown = [name for name in wanted if name not in results]
    if unknown:
        raise InvalidInput(f"model {model!r} has outputs {list(results)}; got {unknown}")
    outputs = []
    for name, array in results.items():
        if wanted and name not in wanted:
            continue
        output = InferOutput(name, list(array.shape), datatype(array.dtype))
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
        except ValueError:
            raise InvalidInput("the request body is not JSON") from None
    if not isinstance(payload, dict):
        raise InvalidInput("expected a JSON object with 'instances' or 'inputs'")
    return payload


def v1_inputs(payload: dict[str, Any], description: Description, model: str) -> dict[str, Any]:
    """A v1 request's values by input name: rows (``instances``) or columns (``inputs``)."""
    if "instances" in payload:
        instances = payload["instances"]
        if not isinstance(instances, list) or not instances:
            raise InvalidInput("'instances' must be a non-empty list")
        if all(isinstance(row, dict) for row in instances):
            names = list(instances[0])
            if any(list(row) != names for row in instances):
                raise InvalidInput("every instance must name the same inputs")
            return {name: [row[name] for row in instances] for name in names}
        return {_single_input(description, model): instances}
    if "inputs" in payload:
        inputs = payload["inputs"]
        if isinstance(inputs, dict):
            return {str(name): value for name, value in inputs.items()}
        return {_single_input(description, model): inputs}
    raise InvalidInput("expected a JSON object with 'instances' or 'inputs'")


def _single_input(description: Description, model: str) -> str:
    if len(description.inputs) > 1:
        names = [spec.name for spec in description.inputs]
        raise InvalidInput(f"model {model!r} takes inputs {names}: pass a dict by name")
    return description.inputs[0].name if description.inputs else "input_0"


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
