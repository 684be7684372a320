"""The peer of ``bundle serve``: a KServe custom model as a user writes it by hand.

``python benchmarks/plain_kserve.py --model_path model.keras --model_name NAME --http_port P``
serves the Keras file with KServe's model server and its defaults: ``predict`` is synchronous,
calls the Keras model (its custom layers imported by ``--custom_module``) on the request's one
input and answers ``output_0``. No verification, no
batching, no checks: what ``bundle serve`` is measured against (``benchmarks/serve_peer.py``).
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

import keras
import kserve
from kserve import InferOutput, InferRequest, InferResponse
from kserve.utils.numpy_codec import from_np_dtype


class KerasModel(kserve.Model):  # type: ignore[misc]  # kserve has no type hints
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.load()

    def load(self) -> bool:
        self.model = keras.saving.load_model(self.path)
        self.ready = True
        return True

    def predict(self, payload: InferRequest, headers: Any = None) -> InferResponse:
        x = payload.inputs[0].as_numpy()
        y = self.model(x, training=False).numpy()
        output = InferOutput("output_0", list(y.shape), from_np_dtype(y.dtype))
        output.set_data_from_numpy(y, binary_data=False)
        return InferResponse(payload.id or "", self.name, infer_outputs=[output])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model_path", required=True)
    parser.add_argument("--custom_module", action="append", default=[])  # the custom layers
    args, _ = parser.parse_known_args()
    for module in args.custom_module:
        importlib.import_module(module)
    kserve.ModelServer().start([KerasModel(args.model_name, args.model_path)])
