"""`bundle serve`: a real KServe model server in a subprocess, real HTTP on loopback, real reloads.

One server is started for the module (each TensorFlow process costs seconds); the reload story
runs against it in one test, and leaves it serving what it served before.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bundler import Bundle, build_bundle, load_bundle
from bundler.errors import BundleError

from ..conftest import (
    EXAMPLES,
    ROOT,
    CheckPage,
    cli_env,
    require_module,
    require_program,
    service_env,
)
from ..hostile import edit_keras_config, edit_lock, find_objects, reseal

require_module("kserve", "pip install -e '.[test]' (the serve extra brings it)")

NAME = "custom-layer-regressor"
JSON = {"content-type": "application/json"}
X = np.array([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 1.0], [-1.0, 0.5, 2.0, -3.0]], "float32")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def request(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        payload = None if body is None else json.dumps(body)
        connection.request(method, path, payload, JSON)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def v2_body(x: np.ndarray) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
        ]
    }


def v2_output(document: dict[str, Any]) -> np.ndarray:
    (output,) = document["outputs"]
    array: np.ndarray = np.asarray(output["data"], "float32").reshape(output["shape"])
    return array


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    current: Path
    bundles: dict[str, Path] = field(default_factory=dict)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_log(self, pattern: str, since: int, timeout: float = 120) -> str:
        """The log after offset ``since`` from the first match of ``pattern`` on."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_text()[since:]
            found = re.search(pattern, text, flags=re.MULTILINE)
            if found:
                return text[found.start() :]
            assert self.process.poll() is None, self.log_text()[-3000:]
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in the log:\n{self.log_text()[since:][-3000:]}")

    def point_at(self, name: str) -> None:
        """Flip ``current`` to another bundle atomically, as a deploy does."""
        staged = self.current.with_name("current.new")
        staged.symlink_to(self.bundles[name].name)
        os.replace(staged, self.current)

    def reload(self, name: str, outcome: str) -> str:
        """Point ``current`` at ``name``, send SIGHUP; the log from the reload's verdict on."""
        self.point_at(name)
        since = len(self.log_text())
        self.process.send_signal(signal.SIGHUP)
        logged = self.wait_for_log(rf"reloaded {NAME}|reload of {NAME} refused", since)
        assert logged.startswith(outcome), logged
        return logged


def start_server(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``bundle serve ARGS``, its gRPC on a free port unless ARGS say (8081 may be taken)."""
    if "--grpc-port" not in args and "--no-grpc" not in args:
        args = [*args, "--grpc-port", str(free_port())]
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "bundler", "serve", *args],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def wait_ready(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            if request(port, "GET", "/v2/health/ready")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("the server did not become ready:\n" + log.read_text()[-3000:])


@pytest.fixture(scope="module")
def deploy(built: dict[str, Bundle], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Bundles as a deploy folder holds them: v1 (the session's), v2 (retrained), broken ones."""
    folder = tmp_path_factory.mktemp("deploy")
    workspace = folder / "workspace"
    shutil.copytree(EXAMPLES / "custom_layer", workspace)
    manifest = workspace / "manifest.yaml"
    text = manifest.read_text().replace("version: 0.3.0", "version: 0.4.0")
    golden = "examples:\n  - name: smoke\n    inputs: [[1, 2, 3, 4], [0, 0, 0, 1]]\n"
    manifest.write_text(text.replace("epochs: 3", "epochs: 6") + golden)
    v2 = build_bundle(manifest, folder / "v2", rehearse=False).path
    bundles = {"v1": folder / "v1", "v2": v2}
    shutil.copytree(built["custom_layer"].path, bundles["v1"])
    bundles["v2-tampered"] = folder / "v2-tampered"
    shutil.copytree(bundles["v2"], bundles["v2-tampered"])
    with (bundles["v2-tampered"] / "model.keras").open("ab") as stream:
        stream.write(b"\0")
    bundles["v2-incompatible"] = folder / "v2-incompatible"
    shutil.copytree(bundles["v2"], bundles["v2-incompatible"])

    def pin_a_major_ahead(lock: dict[str, Any]) -> None:
        lock["components"][0].update(version="2.0.0", compatible=">=2.0.0 <3.0.0")

    edit_lock(bundles["v2-incompatible"], pin_a_major_ahead)
    bundles["v2-drifted"] = folder / "v2-drifted"  # golden outputs the model no longer gives
    shutil.copytree(bundles["v2"], bundles["v2-drifted"])
    (example,) = json.loads((bundles["v2"] / "bundle.lock.json").read_text())["examples"]
    outputs = bundles["v2-drifted"] / example["outputs"]
    with np.load(outputs) as stored:
        np.savez(outputs, **{key: stored[key] + 1.0 for key in stored.files})
    reseal(bundles["v2-drifted"])
    bundles["v2-unsafe"] = folder / "v2-unsafe"  # Python bytecode hidden in a layer's config
    shutil.copytree(bundles["v2"], bundles["v2-unsafe"])

    def hide_a_lambda(config: dict[str, Any]) -> None:
        (layer,) = find_objects(config, class_name="Scale")
        lambda_ = {"class_name": "__lambda__", "config": {"code": "YQ==", "defaults": None}}
        layer["config"]["factor"] = lambda_

    edit_keras_config(bundles["v2-unsafe"], hide_a_lambda)
    bundles["other-name"] = folder / "other-name"
    shutil.copytree(built["sequential"].path, bundles["other-name"])
    (folder / "current").symlink_to("v1")
    return bundles


@pytest.fixture(scope="module")
def server(deploy: dict[str, Path]) -> Iterator[Server]:
    port = free_port()
    current = deploy["v1"].parent / "current"
    log = current.parent / "server.log"
    process = start_server([str(current), "--port", str(port)], service_env(), log)
    try:
        wait_ready(process, port, log)
        yield Server(process, port, log, current, deploy)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_v2_infer_and_v1_predict_answer_what_load_bundle_predicts(
    server: Server, deploy: dict[str, Path]
) -> None:
    expected = load_bundle(deploy["v1"]).predict(X)

    status, document = request(server.port, "POST", f"/v2/models/{NAME}/infer", v2_body(X))
    assert status == 200, document
    assert document["model_name"] == NAME and document["model_version"] == "0.3.0"
    assert document["outputs"][0]["name"] == "output_0"
    assert document["outputs"][0]["datatype"] == "FP32"
    np.testing.assert_allclose(v2_output(document), expected, rtol=1e-6)

    status, document = request(
        server.port, "POST", f"/v1/models/{NAME}:predict", {"instances": X.tolist()}
    )
    assert status == 200, document
    np.testing.assert_allclose(np.asarray(document["predictions"]), expected, rtol=1e-6)


def test_metadata_names_inputs_outputs_version_and_digest(
    server: Server, deploy: dict[str, Path]
) -> None:
    status, document = request(server.port, "GET", f"/v2/models/{NAME}")
    assert status == 200, document
    digest = json.loads((deploy["v1"] / "bundle.lock.json").read_text())["digest"]
    assert document == {
        "name": NAME,
        "versions": ["0.3.0"],
        "platform": "keras",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "output_0", "datatype": "FP32", "shape": [-1, 1]}],
        "parameters": {
            "digest": digest,
            "mode": "keras",
            "policy": "adapt",
            "bundle": str(deploy["v1"]),
        },
    }


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        pytest.param(
            f"/v2/models/{NAME}/infer",
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]},
            400,
            f"input 'x' has shape [1, 3]; model '{NAME}' takes [-1, 4] (-1: any size)",
            id="wrong-shape",
        ),
        pytest.param(
            f"/v1/models/{NAME}:predict", {"rows": [[1, 2, 3, 4]]}, 400,
            "expected a JSON object with 'instances' or 'inputs'", id="v1-no-instances",
        ),
        pytest.param(
            "/v2/models/no-such-model/infer", v2_body(X), 404,
            "Model with name no-such-model does not exist.",
            id="unknown-model",
        ),
    ],
)  # fmt: skip
def test_a_bad_request_is_an_error_naming_why(
    server: Server, path: str, body: Any, status: int, error: str
) -> None:
    got, document = request(server.port, "POST", path, body)
    assert got == status, document
    assert document == {"error": error}


def test_the_graph_fallback_is_served_under_the_same_names(deploy: dict[str, Path]) -> None:
    """Under --policy fallback a bundle the Keras path refuses is served as the SavedModel graph:
    clients see the same inputs and outputs, and ``platform`` says which path answers."""
    from bundler.errors import FallbackWarning
    from bundler.serve.model import load_for_serving

    keras_path = load_for_serving(deploy["v2"], "adapt")
    with pytest.warns(FallbackWarning):
        graph_path = load_for_serving(deploy["v2-incompatible"], "fallback")
    assert graph_path.loaded.mode == "graph"
    assert (graph_path.inputs, graph_path.outputs) == (keras_path.inputs, keras_path.outputs)
    assert graph_path.metadata()["platform"] == "tensorflow_savedmodel"
    np.testing.assert_allclose(
        graph_path.run({"x": X})["output_0"], keras_path.run({"x": X})["output_0"], rtol=1e-5
    )


def test_several_inputs_and_outputs_are_served_by_name(serve_bundles: dict[str, Bundle]) -> None:
    """v2 tensors by name; v1 rows (a dict a row) and columns (a dict of lists) alike."""
    from kserve.errors import InvalidInput

    from bundler.serve.model import load_for_serving
    from bundler.serve.protocol import check_inputs, v1_inputs, v1_outputs

    bundle = serve_bundles["multi-io"]
    served = load_for_serving(bundle.path, "adapt")
    described, name = served.description, served.name

    def check(named: dict[str, Any]) -> dict[str, Any]:
        return check_inputs(named, described, name)

    assert [spec.to_json() for spec in served.inputs] == [
        {"name": "a", "datatype": "FP32", "shape": [-1, 2]},
        {"name": "b", "datatype": "FP32", "shape": [-1, 3]},
    ]
    assert [spec.name for spec in served.outputs] == ["score", "probs"]

    a = np.array([[1.0, 2.0], [0.0, 0.0]], "float32")
    b = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], "float32")
    expected = load_bundle(bundle.path).predict({"a": a, "b": b})
    by_name = served.run({"a": a, "b": b})
    for key in ("score", "probs"):
        np.testing.assert_allclose(by_name[key], expected[key], rtol=1e-6)

    rows = {"instances": [{"a": a[i].tolist(), "b": b[i].tolist()} for i in range(2)]}
    predictions = v1_outputs(served.run(check(v1_inputs(rows, described, name))), rows=True)
    assert [sorted(row) for row in predictions] == [["probs", "score"]] * 2
    np.testing.assert_allclose([row["probs"] for row in predictions], expected["probs"], 1e-6)

    columns = {"inputs": {"a": a.tolist(), "b": b.tolist()}}
    predictions = v1_outputs(served.run(check(v1_inputs(columns, described, name))), rows=False)
    np.testing.assert_allclose(predictions["score"], expected["score"], rtol=1e-6)

    with pytest.raises(InvalidInput, match=r"takes inputs \['a', 'b'\]; got \['a'\]"):
        check({"a": a})


def test_the_server_listens_on_loopback_only(server: Server) -> None:
    assert f"Uvicorn running on http://127.0.0.1:{server.port} " in server.log_text()


def _expected_refusal(path: Path) -> str:
    with pytest.raises(BundleError) as refused:
        load_bundle(path, check_examples=True)
    return str(refused.value)


def test_reload_refuses_damaged_and_incompatible_bundles_and_swaps_a_good_one_under_load(
    server: Server, deploy: dict[str, Path]
) -> None:
    v1 = load_bundle(deploy["v1"])
    v2 = load_bundle(deploy["v2"])
    answers = {"v1": v1.predict(X), "v2": v2.predict(X)}
    assert not np.allclose(answers["v1"], answers["v2"])  # the swap is visible in the outputs

    # four clients hammer the server throughout, so that batches are in flight during every
    # reload: every answer is v1's or v2's, never an error
    stop = threading.Event()
    counting = threading.Lock()
    seen: dict[str, int] = {"v1": 0, "v2": 0}
    failures: list[str] = []
    slowest = [0.0]

    def hammer() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        body = json.dumps(v2_body(X))
        deadline = time.monotonic() + 300
        for _ in range(100_000):
            if stop.is_set() or time.monotonic() > deadline:
                break
            started = time.perf_counter()
            try:
                connection.request("POST", f"/v2/models/{NAME}/infer", body, JSON)
                response = connection.getresponse()
                document = json.loads(response.read())
            except (OSError, http.client.HTTPException, ValueError) as error:
                failures.append(f"{type(error).__name__}: {error}")
                connection.close()
                continue
            slowest[0] = max(slowest[0], time.perf_counter() - started)
            if response.status != 200:
                failures.append(f"{response.status}: {document}")
                continue
            output = v2_output(document)
            which = [k for k, v in answers.items() if np.allclose(output, v, rtol=1e-6)]
            if len(which) != 1:
                failures.append(f"an answer of neither bundle: {output.tolist()}")
                continue
            with counting:
                seen[which[0]] += 1
        connection.close()

    clients = [threading.Thread(target=hammer) for _ in range(4)]
    for client in clients:
        client.start()
    try:
        deadline = time.monotonic() + 60
        while seen["v1"] < 20 and not failures and time.monotonic() < deadline:
            time.sleep(0.05)  # the client is answered before the first reload
        digest = {name: load_bundle(deploy[name], verify=False).digest for name in ("v1", "v2")}
        still = f"reload of {NAME} refused, still serving 0.3.0 {digest['v1']}: "

        logged = server.reload("v2-tampered", "reload of")
        expected = _expected_refusal(deploy["v2-tampered"])
        assert "model.keras: has" in expected  # the damaged file, named
        assert logged.startswith(still + expected), logged

        logged = server.reload("v2-incompatible", "reload of")
        expected = _expected_refusal(deploy["v2-incompatible"])
        assert "acme_layers.layers  2.0.0   >=2.0.0 <3.0.0  1.2.0" in expected  # the plan's table
        assert logged.startswith(still + expected), logged

        for name, words in (("v2-drifted", "golden examples drifted"), ("v2-unsafe", "Lambda")):
            logged = server.reload(name, "reload of")
            expected = _expected_refusal(deploy[name])
            assert words in expected
            assert logged.startswith(still + expected), logged

        logged = server.reload("other-name", "reload of")
        assert logged.startswith(
            still + f"{deploy['other-name']}: the bundle is named 'sequential-classifier', not "
            f"'{NAME}'; a reload keeps the served name (serve it as another BUNDLE instead)"
        ), logged
        assert seen["v2"] == 0 and seen["v1"] >= 20, (seen, failures[:5])  # the old one answered

        logged = server.reload("v2", "reloaded")
        assert logged.startswith(
            f"reloaded {NAME}: now serving 0.4.0 {digest['v2']} from {deploy['v2']} "
            f"(was 0.3.0 {digest['v1']}; "
        ), logged
        status, document = request(server.port, "POST", f"/v2/models/{NAME}/infer", v2_body(X))
        assert status == 200, document
        np.testing.assert_allclose(v2_output(document), answers["v2"], rtol=1e-6)
        assert request(server.port, "GET", f"/v2/models/{NAME}")[1]["versions"] == ["0.4.0"]
        time.sleep(0.5)  # the client sees the new model too
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=60)
        server.reload("v1", "reloaded")  # what the other tests expect
    assert not failures, failures[:5]
    assert seen["v1"] > 0 and seen["v2"] > 0, seen
    assert slowest[0] < 5, slowest  # nobody waited for a load


def test_a_bundle_that_cannot_be_served_stops_the_start_with_the_plan(
    deploy: dict[str, Path], tmp_path: Path
) -> None:
    """Without its component, the bundle is refused before anything listens: exit 1, the table."""
    verify = subprocess.run(
        [sys.executable, "-m", "bundler", "verify", str(deploy["v1"])],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 1
    table = [line[4:] for line in verify.stdout.splitlines() if re.match(r"    \S", line)]
    assert table[1].startswith("acme_layers.layers  1.2.0   >=1.2.0 <2.0.0  -          missing")

    log = tmp_path / "refused.log"
    process = start_server([str(deploy["v1"]), "--port", str(free_port())], cli_env(), log)
    assert process.wait(timeout=180) == 1
    printed = log.read_text().splitlines()
    assert printed[0] == (
        f"bundle: error: {deploy['v1']}: cannot be loaded under policy 'adapt': "
        "acme_layers.layers (missing): not installed"
    )
    assert printed[2 : 2 + len(table)] == table  # the plan's table, as verify prints it
    assert printed[-1].strip() == (
        "or use policy 'fallback' to serve the SavedModel graph for inference"
    )


def test_an_address_in_use_is_refused_before_any_bundle_loads(server: Server) -> None:
    from bundler.errors import UsageError
    from bundler.serve.server import serve

    with pytest.raises(UsageError) as refused:
        serve(["/no/such/bundle"], port=server.port)
    assert str(refused.value) == f"cannot listen on 127.0.0.1:{server.port}: Address already in use"
    assert refused.value.exit_code == 2


def test_serve_help_teaches_the_endpoints_reloads_and_options() -> None:
    helped = subprocess.run(
        [sys.executable, "-m", "bundler", "serve", "--help"],
        env=cli_env(COLUMNS="80"),  # argparse wraps the options to the terminal's width
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert helped.returncode == 0
    for line in (
        "  POST /v2/models/NAME/infer          Open Inference Protocol (v2)",
        '  POST /v1/models/NAME:predict        {"instances": [...]} in, {"predictions": [...]} out',
        "On SIGHUP each BUNDLE path is resolved again (a 'current -> v3' symlink is the usual",
        "  --watch SECONDS       also poll every SECONDS and reload when a BUNDLE path",
        "  ln -sfn v4 bundles/current.new && mv -T bundles/current.new bundles/current",
    ):
        assert line in helped.stdout.splitlines(), (line, helped.stdout)


def test_serve_without_the_extra_says_how_to_install_it() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.modules['kserve'] = None\n"
            "from bundler.cli.main import main\n"
            "sys.exit(main(['serve', 'bundles/current']))",
        ],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr == (
        "bundle: error: bundle serve needs the 'serve' extra: pip install 'keras-bundler[serve]'\n"
    )


def test_watch_reloads_when_the_path_names_another_bundle(
    deploy: dict[str, Path], tmp_path: Path
) -> None:
    """--watch, for platforms without SIGHUP: a new target or lock digest triggers the reload;
    a refused one is not retried until it changes again. In-process: no HTTP needed."""
    import asyncio

    from bundler.serve.model import BundleModel, Reloader

    current = tmp_path / "current"
    current.symlink_to(deploy["v1"])
    model = BundleModel(current)
    model.load()
    assert not model.changed()
    attempts: list[bool] = []
    reload = model.reload

    def counted() -> bool:
        attempts.append(reload())
        return attempts[-1]

    model.reload = counted  # type: ignore[method-assign]

    async def watch_until(tries: int) -> None:
        watcher = asyncio.ensure_future(Reloader([model]).watch(0.05))
        deadline = time.monotonic() + 60
        while len(attempts) < tries and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # a few more polls: nothing new, so nothing is reloaded
        watcher.cancel()

    for target, version, tries in (("v2-tampered", "0.3.0", 1), ("v2", "0.4.0", 2)):
        current.unlink()
        current.symlink_to(deploy[target])
        assert model.changed()
        asyncio.run(watch_until(tries))
        assert model.serving.version == version
        assert not model.changed()
        assert attempts == [False, True][:tries]  # a refused one is not tried again


def test_the_deploying_guide_prints_what_it_shows(
    server: Server, check_page: CheckPage, tmp_path: Path
) -> None:
    """docs/deploying.md's curl commands, run against this module's server (it serves the
    session's custom_layer bundle, as the guide's server does)."""
    from ..test_doc_outputs import scene

    require_program("curl", "apt-get install curl")
    here = scene(tmp_path, examples=False)
    here.shown_as = {
        f"127.0.0.1:{server.port}": "localhost:8080",
        str(server.bundles["v1"]): "/srv/ml/bundles/regressor-0.3.0",
    }
    # the session's build of custom_layer: its digest depends on what the process built before
    here.facts = {"regressor-0.3.0": load_bundle_digest(server.bundles["v1"])}
    check_page("docs/deploying.md", here)


def load_bundle_digest(bundle: Path) -> str:
    return str(json.loads((bundle / "bundle.lock.json").read_text())["digest"])
