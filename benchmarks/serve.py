"""Benchmark rows for ``bundle serve``: HTTP throughput and latency, and what a reload costs.

For one built bundle, a real ``bundle serve`` process on loopback answers Open Inference Protocol
v2 requests (one row of input each) from 1 and from 8 client threads, each on its own keep-alive
connection, for a fixed time; the baseline is ``LoadedBundle.predict`` on the same row, called
in-process from as many threads: what HTTP, JSON and the model server add. The clients run on
the same machine as the server and take their share of its cores.

The reload rows send SIGHUP while one client keeps asking: the slowest answers during the reload
(verify, load beside, swap) against the same client's answers before it.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Row = Callable[..., dict[str, Any]]


def available() -> bool:
    try:
        import kserve  # noqa: F401
    except ImportError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _run_clients(
    call: Callable[[], Callable[[], None]], clients: int, seconds: float
) -> tuple[float, list[float]]:
    """(calls per second, latencies) of ``clients`` threads calling for ``seconds``. ``call()``
    is run once per thread and returns that thread's call (its own connection)."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []
    start = threading.Barrier(clients + 1)
    stop = threading.Event()

    def work(index: int) -> None:
        one = call()
        start.wait()
        try:
            while not stop.is_set():
                began = time.perf_counter()
                one()
                latencies[index].append(time.perf_counter() - began)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise RuntimeError(f"a client failed: {errors[0]!r}")
    flat = [value for values in latencies for value in values]
    return len(flat) / elapsed, flat


class _Server:
    """``bundle serve BUNDLE`` on a free loopback port, its log in a file."""

    def __init__(self, bundle: Path, src: Path, log: Path) -> None:
        self.port = _free_port()
        self.log = log
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(src))
        command = ["serve", str(bundle), "--port", str(self.port), "--no-grpc"]
        with log.open("wb") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bundler", *command],
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("bundle serve exited:\n" + log.read_text()[-2000:])
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                connection.request("GET", "/v2/health/ready")
                if connection.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("bundle serve did not become ready")

    def client(self, name: str, body: bytes) -> Callable[[], None]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = {"content-type": "application/json"}

        def infer() -> None:
            connection.request("POST", f"/v2/models/{name}/infer", body, headers)
            response = connection.getresponse()
            payload = response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {payload[:300]!r}")

        return infer

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def bench_serve(
    bundle: Path, src: Path, seconds: float, row: Row, work: Path
) -> list[dict[str, Any]]:
    """Throughput and latency rows at 1 and 8 clients, then the reload rows, for one bundle."""
    import numpy as np

    import bundler

    loaded = bundler.load_bundle(bundle)
    name = loaded.lock.name
    size = sum(entry.size for entry in loaded.lock.files.values())
    width = int(loaded.model.inputs[0].shape[-1])
    label = f"{name}, bundle {size / 1e6:.0f} MB, one row a request"
    x = np.random.default_rng(0).normal(size=(1, width)).astype("float32")
    body = json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, width], "data": x[0].tolist()}]}
    ).encode()
    rows = []
    server = _Server(bundle, src, work / f"serve-{name}.log")
    try:
        for clients in (1, 8):
            rate, latencies = _run_clients(lambda: server.client(name, body), clients, seconds)
            base_rate, base = _run_clients(lambda: lambda: loaded.predict(x), clients, seconds)
            note = f"{label}, {clients} client{'s' if clients > 1 else ''}"
            suffix = f"{clients}_client{'s' if clients > 1 else ''}"
            rows.append(row(f"serve_requests_per_s_{suffix}", rate, base_rate, "/s", note))
            for share, tag in ((0.5, "p50"), (0.99, "p99")):
                ours = _percentile(latencies, share) * 1000
                theirs = _percentile(base, share) * 1000
                rows.append(row(f"serve_{tag}_latency_{suffix}", ours, theirs, "ms", note))
        for entry in rows:
            entry["target"] = "baseline: predict() in-process"
        for entry in _bench_reload(server, name, body, seconds, row, label):
            entry["target"] = "baseline: the same client before the reload"
            rows.append(entry)
    finally:
        server.stop()
    return rows


def _bench_reload(
    server: _Server, name: str, body: bytes, seconds: float, row: Row, label: str
) -> list[dict[str, Any]]:
    """One client asks throughout; SIGHUP re-verifies and reloads the same bundle beside."""
    marks: list[tuple[float, float]] = []  # (when it started, how long it took)
    stop = threading.Event()

    def ask() -> None:
        infer = server.client(name, body)
        while not stop.is_set():
            began = time.perf_counter()
            infer()
            marks.append((began, time.perf_counter() - began))

    client = threading.Thread(target=ask)
    client.start()
    time.sleep(seconds)
    since = len(server.log.read_text(errors="replace"))
    sent = time.perf_counter()
    server.process.send_signal(signal.SIGHUP)
    took = None
    deadline = time.monotonic() + 600
    while took is None and time.monotonic() < deadline:
        found = re.search(
            r"reloaded .*; ([0-9.]+) s\)|reload of .* (refused|failed)",
            server.log.read_text(errors="replace")[since:],
        )
        if found and found.group(1):
            took = float(found.group(1))
        elif found:
            raise RuntimeError("the benchmark's reload was refused: see " + str(server.log))
        time.sleep(0.01)
    done = time.perf_counter()
    time.sleep(0.5)
    stop.set()
    client.join()
    before = [latency for began, latency in marks if began < sent]
    during = [latency for began, latency in marks if sent <= began <= done]
    if not during or not before:
        return []
    note = f"{label}, 1 client; reload took {took:.2f} s, {len(during)} answers during it"
    return [
        row(
            "serve_reload_p99_latency",
            _percentile(during, 0.99) * 1000,
            _percentile(before, 0.99) * 1000,
            "ms",
            note + "; baseline = p99 before the reload",
        ),
        row(
            "serve_reload_max_latency",
            max(during) * 1000,
            statistics.median(before) * 1000,
            "ms",
            note + "; baseline = p50 before the reload",
        ),
    ]
