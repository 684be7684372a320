"""`bundle serve` as clients meet it: real Open Inference Protocol clients (tritonclient over gRPC
and HTTP), requests the models cannot take, slow clients, large bodies, a full queue.

One server for the module serves a Sequential model (``sequential-classifier``, input
``features`` [-1, 8]) and a model with two inputs and two outputs by name (``multi-io``), with
short timeouts, a 64 KiB body limit and a queue of one request, so that each limit can be met
in a test without waiting for its default.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bundler import Bundle, load_bundle

from ..conftest import cli_env
from .test_serve import free_port, request, start_server, wait_ready

pytest.importorskip("kserve", reason="the serve extra is not installed")
httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient is not installed")

HERE = Path(__file__).resolve().parent

SEQ = "sequential-classifier"
MULTI = "multi-io"
X = np.arange(24, dtype="float32").reshape(3, 8) / 10


@dataclass
class Server:
    port: int
    grpc_port: int
    log: Path
    bundles: dict[str, Path]


@pytest.fixture(scope="module")
def server(
    built: dict[str, Bundle],
    serve_bundles: dict[str, Bundle],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    bundles = {SEQ: built["sequential"].path, MULTI: serve_bundles["multi-io"].path}
    port, grpc_port = free_port(), free_port()
    log = tmp_path_factory.mktemp("serve-clients") / "server.log"
    process = start_server(
        [
            *(str(path) for path in bundles.values()),
            *("--port", str(port), "--grpc-port", str(grpc_port)),
            *("--header-timeout", "1", "--body-timeout", "1"),
            *("--max-body-size", "64K", "--max-queue", "1"),
        ],
        cli_env(),
        log,
    )
    try:
        wait_ready(process, port, log)
        yield Server(port, grpc_port, log, bundles)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except Exception:
            process.kill()
            process.wait()


# -- real clients ---------------------------------------------------------------------------------


def grpc_client(server: Server, *args: str, stdin: str = "") -> Any:
    """tests/serve/triton_grpc_client.py in a fresh interpreter (see its docstring for why)."""
    result = subprocess.run(
        [sys.executable, str(HERE / "triton_grpc_client.py"), f"127.0.0.1:{server.grpc_port}",
         *args],
        env=cli_env(), input=stdin, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_tritonclient_grpc_describes_and_runs_a_sequential_model(server: Server) -> None:
    assert grpc_client(server, "metadata", SEQ) == {
        "name": SEQ,
        "versions": ["1.0.0"],
        "platform": "keras",
        "inputs": [{"name": "features", "datatype": "FP32", "shape": ["-1", "8"]}],
        "outputs": [{"name": "output_0", "datatype": "FP32", "shape": ["-1", "3"]}],
    }
    answer = grpc_client(server, "infer", SEQ, json.dumps({"features": X.tolist()}))
    expected = load_bundle(server.bundles[SEQ]).predict(X)
    np.testing.assert_allclose(answer["output_0"], expected, rtol=1e-5, atol=1e-6)


MULTI_INPUTS = {
    "a": np.array([[1.0, 2.0], [0.5, -1.0]], "float32"),
    "b": np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]], "float32"),
}


def test_tritonclient_grpc_describes_and_runs_a_model_with_dict_inputs(server: Server) -> None:
    metadata = grpc_client(server, "metadata", MULTI)
    assert metadata["inputs"] == [
        {"name": "a", "datatype": "FP32", "shape": ["-1", "2"]},
        {"name": "b", "datatype": "FP32", "shape": ["-1", "3"]},
    ]
    assert [output["name"] for output in metadata["outputs"]] == ["score", "probs"]
    sent = json.dumps({name: array.tolist() for name, array in MULTI_INPUTS.items()})
    answer = grpc_client(server, "infer", MULTI, sent)
    expected = load_bundle(server.bundles[MULTI]).predict(MULTI_INPUTS)
    assert sorted(answer) == ["probs", "score"]
    for name in ("score", "probs"):
        np.testing.assert_allclose(answer[name], expected[name], rtol=1e-5, atol=1e-6)


def test_tritonclient_http_sends_binary_tensors(server: Server) -> None:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    metadata = client.get_model_metadata(MULTI)
    assert [tensor["name"] for tensor in metadata["inputs"]] == ["a", "b"]
    sent = []
    for name, array in MULTI_INPUTS.items():
        tensor = httpclient.InferInput(name, list(array.shape), "FP32")
        tensor.set_data_from_numpy(array)  # binary by default: after the JSON, in the body
        sent.append(tensor)
    answer = client.infer(MULTI, sent)
    expected = load_bundle(server.bundles[MULTI]).predict(MULTI_INPUTS)
    np.testing.assert_allclose(answer.as_numpy("probs"), expected["probs"], rtol=1e-5)


def test_a_request_the_grpc_server_cannot_take_is_invalid_argument(server: Server) -> None:
    assert grpc_client(server, "infer", SEQ, json.dumps({"features": [[1, 2, 3]]})) == {
        "status": "StatusCode.INVALID_ARGUMENT",
        "message": f"input 'features' has shape [1, 3]; model '{SEQ}' takes [-1, 8] (-1: any size)",
    }


# -- requests the models cannot take --------------------------------------------------------------


def v2(name: str, datatype: str, shape: list[int], data: Any) -> dict[str, Any]:
    return {"inputs": [{"name": name, "datatype": datatype, "shape": shape, "data": data}]}


ROW = list(range(8))

BAD_REQUESTS = [
    pytest.param(
        f"/v2/models/{SEQ}/infer", v2("features", "FP32", [1, 8], ["a"] * 8),
        f"input 'features' holds strings; model '{SEQ}' takes FP32",
        id="strings-as-fp32",
    ),
    pytest.param(
        f"/v2/models/{SEQ}/infer", v2("features", "BYTES", [1, 8], ["a"] * 8),
        f"input 'features' is BYTES; model '{SEQ}' takes FP32",
        id="bytes-input",
    ),
    pytest.param(
        f"/v2/models/{SEQ}/infer", v2("features", "FP32", [1, 8], [1, 2, 3]),
        "input 'features' has 3 values; shape [1, 8] holds 8",
        id="data-count-not-the-shape",
    ),
    pytest.param(
        f"/v2/models/{SEQ}/infer", v2("features", "FP32", [100_000_000, 8], ROW),
        "input 'features' has 8 values; shape [100000000, 8] holds 800000000",
        id="a-shape-of-10^8-rows",
    ),
    pytest.param(
        f"/v2/models/{SEQ}/infer", v2("features", "FP32", [-1, 8], ROW),
        "input 'features' has shape [-1, 8]; sizes cannot be negative",
        id="negative-size",
    ),
    pytest.param(
        f"/v2/models/{SEQ}/infer", v2("features", "FP32", [1, 3], [1, 2, 3]),
        f"input 'features' has shape [1, 3]; model '{SEQ}' takes [-1, 8] (-1: any size)",
        id="shape-the-model-does-not-take",
    ),
    pytest.param(
        f"/v2/models/{SEQ}/infer", v2("features", "FP32", [2, 8], [ROW, ROW[:3]]),
        "input 'features' is ragged: its rows differ in length",
        id="ragged-v2-rows",
    ),
    pytest.param(
        f"/v2/models/{SEQ}/infer", v2("features", "FP33", [1, 8], ROW),
        "input 'features' has datatype 'FP33', none of the protocol's: BOOL, UINT8, UINT16, "
        "UINT32, UINT64, INT8, INT16, INT32, INT64, FP16, FP32, FP64, BF16, BYTES",
        id="unknown-datatype",
    ),
    pytest.param(
        f"/v2/models/{SEQ}/infer",
        {**v2("features", "FP32", [1, 8], ROW), "outputs": [{"name": "p"}]},
        f"model '{SEQ}' has outputs ['output_0']; got ['p']",
        id="unknown-output",
    ),
    pytest.param(
        f"/v1/models/{SEQ}:predict", {"instances": [ROW, ROW[:2]]},
        "input 'features' is ragged: its rows differ in length",
        id="ragged-v1-rows",
    ),
    pytest.param(
        f"/v1/models/{SEQ}:predict", {"instances": [["a"] * 8]},
        f"input 'features' holds strings; model '{SEQ}' takes FP32",
        id="v1-strings",
    ),
    pytest.param(
        f"/v2/models/{MULTI}/infer", v2("a", "FP32", [1, 2], [1, 2]),
        f"model '{MULTI}' takes inputs ['a', 'b']; got ['a']",
        id="an-input-missing",
    ),
    pytest.param(
        f"/v2/models/{MULTI}/infer",
        {"inputs": [*v2("a", "FP32", [1, 2], [1, 2])["inputs"],
                    *v2("b\x1b[2J", "FP32", [1, 3], [1, 2, 3])["inputs"]]},
        f"model '{MULTI}' takes inputs ['a', 'b']; got ['a', 'b\\x1b[2J']",
        id="a-name-with-a-terminal-escape",
    ),
    pytest.param(
        f"/v2/models/{MULTI}/infer",
        {"inputs": [*v2("a", "FP32", [2, 2], [1, 2, 3, 4])["inputs"],
                    *v2("b", "FP32", [1, 3], [1, 2, 3])["inputs"]]},
        f"model '{MULTI}' takes as many rows in every input; got {{'a': 2, 'b': 1}}",
        id="inputs-with-different-rows",
    ),
    pytest.param(
        f"/v2/models/{SEQ}/infer", "{not json",
        "the request body is not JSON",
        id="not-json",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "error"), BAD_REQUESTS)
def test_a_request_the_model_cannot_take_is_a_400_naming_the_input(
    server: Server, path: str, body: Any, error: str
) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    payload = body if isinstance(body, str) else json.dumps(body)
    connection.request("POST", path, payload, {"content-type": "application/json"})
    response = connection.getresponse()
    assert (response.status, json.loads(response.read())) == (400, {"error": error})


# -- slow clients, large bodies, a full queue -----------------------------------------------------


def slow_client(port: int, sent: bytes) -> tuple[float, bytes]:
    """Connect, send ``sent`` and nothing more; (seconds until the server closed, its answer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        began = time.monotonic()
        connection.sendall(sent)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
        return time.monotonic() - began, answer


def body_of(answer: bytes) -> tuple[str, Any]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), json.loads(body)


def test_slow_clients_are_answered_408_and_dropped(server: Server) -> None:
    """Three slow clients at once: one silent, one stalling in its headers, one in its body.
    Each is cut after the timeout (1 s here), while a normal request is answered meanwhile."""
    infer = f"POST /v2/models/{SEQ}/infer HTTP/1.1\r\nhost: x\r\n".encode()
    slow = {
        "silent": b"",
        "headers": infer + b"content-type: application/json\r\n",
        "body": infer + b"content-type: application/json\r\ncontent-length: 100\r\n\r\n{",
    }
    results: dict[str, tuple[float, bytes]] = {}
    threads = [
        threading.Thread(target=lambda k=k, v=v: results.update({k: slow_client(server.port, v)}))
        for k, v in slow.items()
    ]
    for thread in threads:
        thread.start()
    status, _ = request(server.port, "POST", f"/v1/models/{SEQ}:predict", {"instances": [ROW]})
    assert status == 200
    for thread in threads:
        thread.join(timeout=30)
    header_late = "the request headers did not arrive within 1 s (--header-timeout)"
    body_late = "the request body did not arrive within 1 s (--body-timeout)"
    assert body_of(results["silent"][1]) == ("HTTP/1.1 408 Request Timeout", {"error": header_late})
    assert body_of(results["headers"][1]) == (
        "HTTP/1.1 408 Request Timeout",
        {"error": header_late},
    )
    assert body_of(results["body"][1]) == ("HTTP/1.1 408 Request Timeout", {"error": body_late})
    assert all(0.9 < seconds < 10 for seconds, _ in results.values()), results


def test_a_body_over_the_limit_is_413_before_it_is_read(server: Server) -> None:
    headers = (
        f"POST /v2/models/{SEQ}/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        "content-length: 100000\r\n\r\n"
    ).encode()
    _, answer = slow_client(server.port, headers)  # the body is never sent: not awaited either
    assert body_of(answer) == (
        "HTTP/1.1 413 Request Entity Too Large",
        {"error": "the request body has 100000 bytes; the limit is 65536 (--max-body-size)"},
    )


def test_a_chunked_body_over_the_limit_is_cut_at_the_limit(server: Server) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    chunks = (b"[" + b"0," * 4000 + b"0]" for _ in range(10))  # 80 KB, no content-length
    connection.request("POST", f"/v2/models/{SEQ}/infer", chunks, encode_chunked=True)
    response = connection.getresponse()
    assert (response.status, json.loads(response.read())) == (
        413,
        {"error": "the request body is larger than the limit, 65536 bytes (--max-body-size)"},
    )


def test_a_grpc_message_over_the_limit_is_refused(server: Server) -> None:
    big = json.dumps({"features": np.ones((4000, 8)).tolist()})  # 128 KB of float32
    answer = grpc_client(server, "infer", SEQ, "-", stdin=big)
    assert answer["status"] == "StatusCode.RESOURCE_EXHAUSTED"


def test_a_full_queue_is_503_with_retry_after(server: Server) -> None:
    """The queue holds one request (--max-queue 1): clients asking at once meet a full one."""
    seen: dict[int, int] = {}
    full: list[tuple[str | None, Any]] = []
    stop = threading.Event()
    body = json.dumps({"instances": [ROW] * 200})

    def ask() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            connection.request("POST", f"/v1/models/{SEQ}:predict", body)
            response = connection.getresponse()
            answer = json.loads(response.read())
            seen[response.status] = seen.get(response.status, 0) + 1
            if response.status == 503:
                full.append((response.getheader("retry-after"), answer))
                stop.set()

    clients = [threading.Thread(target=ask) for _ in range(24)]
    for client in clients:
        client.start()
    for client in clients:
        client.join(timeout=60)
    assert set(seen) == {200, 503}, seen
    assert full[0] == (
        "1",
        {"error": f"model '{SEQ}' has 1 requests waiting, its limit (--max-queue); "
                  "retry after 1 s"},
    )  # fmt: skip


def test_a_full_queue_over_grpc_is_resource_exhausted(server: Server) -> None:
    """64 requests at once over one channel, the queue holding one: the rest are refused with
    the same line as over HTTP, as gRPC's RESOURCE_EXHAUSTED, not an internal error."""
    rows = json.dumps({"features": [ROW] * 200})
    for _ in range(5):
        answer = grpc_client(server, "flood", SEQ, rows)
        if "StatusCode.RESOURCE_EXHAUSTED" in answer["counts"]:
            break
    assert set(answer["counts"]) == {"ok", "StatusCode.RESOURCE_EXHAUSTED"}, answer
    assert answer["first_error"] == (
        f"model '{SEQ}' has 1 requests waiting, its limit (--max-queue); retry after 1 s"
    )
