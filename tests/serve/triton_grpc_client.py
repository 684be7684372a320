"""A real Open Inference Protocol gRPC client, in its own process: tritonclient's generated
protos and KServe's both register ``inference.*`` messages in protobuf's default pool, so the two
cannot be imported by one interpreter (as they never are: a client is not the server).

    python tests/serve/triton_grpc_client.py HOST:PORT metadata MODEL
    python tests/serve/triton_grpc_client.py HOST:PORT infer MODEL '{"x": [[1.0, 2.0]]}'
    python tests/serve/triton_grpc_client.py HOST:PORT infer MODEL - < inputs.json
    python tests/serve/triton_grpc_client.py HOST:PORT flood MODEL '{"x": [[1.0, 2.0]]}'

prints one JSON document: the metadata, the outputs by name, or ``{"status", "message"}`` of the
error the server answered; ``flood`` sends the request 64 times at once and prints how many
answers had each status, with the first error's message.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException


def main(address: str, command: str, model: str, inputs: str = "{}") -> object:
    client = grpcclient.InferenceServerClient(address)
    try:
        if command == "metadata":
            return client.get_model_metadata(model, as_json=True)
        sent = []
        for name, values in json.loads(sys.stdin.read() if inputs == "-" else inputs).items():
            array = np.asarray(values, dtype="float32")
            tensor = grpcclient.InferInput(name, list(array.shape), "FP32")
            tensor.set_data_from_numpy(array)
            sent.append(tensor)
        if command == "flood":
            return flood(client, model, sent)
        answer = client.infer(model, sent)
        names = [output["name"] for output in answer.get_response(as_json=True)["outputs"]]
        return {name: answer.as_numpy(name).tolist() for name in names}
    except InferenceServerException as error:
        return {"status": error.status(), "message": error.message()}


def flood(client: grpcclient.InferenceServerClient, model: str, sent: list[object]) -> object:
    import threading

    done = threading.Semaphore(0)
    counts: dict[str, int] = {}
    messages: list[str] = []

    def answered(result: object, error: InferenceServerException | None) -> None:
        status = "ok" if error is None else str(error.status())
        counts[status] = counts.get(status, 0) + 1
        if error is not None:
            messages.append(str(error.message()))
        done.release()

    for _ in range(64):
        client.async_infer(model, sent, answered)
    for _ in range(64):
        done.acquire(timeout=120)
    return {"counts": counts, "first_error": messages[0] if messages else None}


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:])))
