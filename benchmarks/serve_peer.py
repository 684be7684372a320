"""``bundle serve`` against a plain KServe model, side by side, in one run.

    python -m benchmarks.serve_peer                       # 10k, 4M and 25M parameters
    python -m benchmarks.serve_peer --sizes 4M --clients 1,8 --seconds 5 --rounds 2

For each model size one bundle is built (``benchmarks/models.py``: a Dense stack with a custom
layer), then two servers run at once on loopback: ``bundle serve BUNDLE`` (A) and the hand-written
KServe model of ``benchmarks/plain_kserve.py`` on the bundle's own ``model.keras`` (B). For each
number of clients, each client a thread on its own keep-alive connection sending one row a
request over the Open Inference Protocol v2 (JSON), the two are measured in ABBA order for
``--seconds`` each, ``--rounds`` times; a server's requests are pooled over its turns. Printed:
requests per second, p50 and p99 latency, and A/B ratios (throughput: higher is better for A;
latency: lower is). The clients run on the same machine and take their share of its cores, equally
for both servers.

Then, unless ``--no-reload``, the reload check: 8 clients ask ``bundle serve`` throughout while it
is pointed at a damaged bundle (refused) and then at a good copy (accepted); every answer must be a
200. Results go to ``benchmarks/results/serve-peer-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks.workspace import write_workspace

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HERE = Path(__file__).resolve().parent
DEFAULT_SIZES = "10k,4M,25M"
DEFAULT_CLIENTS = "1,4,8,16"


def parse_size(text: str) -> int:
    scale = {"k": 1_000, "M": 1_000_000, "G": 1_000_000_000}
    return int(float(text[:-1]) * scale[text[-1]]) if text[-1] in scale else int(text)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


class Server:
    """A model server process on a free loopback port, its log in a file."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path, port: int) -> None:
        self.port = port
        self.log = log
        with log.open("wb") as sink:
            self.process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)

    def wait_ready(self, name: str) -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.log.name}: exited:\n" + self.log.read_text()[-3000:])
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                connection.request("GET", f"/v2/models/{name}/ready")
                if connection.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.log.name}: not ready")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def client(port: int, name: str, body: bytes) -> Callable[[], int]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"content-type": "application/json"}

    def infer() -> int:
        connection.request("POST", f"/v2/models/{name}/infer", body, headers)
        response = connection.getresponse()
        response.read()
        return response.status

    return infer


def run_clients(port: int, name: str, body: bytes, clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` threads asking for ``seconds``: their latencies, statuses and the time taken."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    statuses: dict[int, int] = {}
    errors: list[str] = []
    start = threading.Barrier(clients + 1)
    stop = threading.Event()
    lock = threading.Lock()

    def work(index: int) -> None:
        infer = client(port, name, body)
        start.wait()
        while not stop.is_set():
            began = time.perf_counter()
            try:
                status = infer()
            except (OSError, http.client.HTTPException) as error:
                errors.append(f"{type(error).__name__}: {error}")
                infer = client(port, name, body)
                continue
            latencies[index].append(time.perf_counter() - began)
            with lock:
                statuses[status] = statuses.get(status, 0) + 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return {
        "seconds": time.perf_counter() - began,
        "latencies": [value for values in latencies for value in values],
        "statuses": statuses,
        "errors": errors,
    }


def _pool(turns: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = [value for turn in turns for value in turn["latencies"]]
    seconds = sum(turn["seconds"] for turn in turns)
    statuses: dict[int, int] = {}
    for turn in turns:
        for status, count in turn["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count
    return {
        "requests_per_s": len(latencies) / seconds,
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "requests": len(latencies),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": sum(len(turn["errors"]) for turn in turns),
    }


def build(folder: Path, params: int) -> tuple[Path, str, int]:
    """(bundle, model name, input width), built in a fresh interpreter (no TensorFlow here)."""
    manifest = write_workspace(folder, params)
    bundle = folder / "bundle"
    subprocess.run(
        [sys.executable, "-m", "bundler", "build", str(manifest), "-o", str(bundle), "--force"],
        check=True,
        capture_output=True,
    )
    sys.path.insert(0, str(folder / "src"))
    try:
        from bench_layers import shape_for

        width = shape_for(params)[0]
    finally:
        sys.path.remove(str(folder / "src"))
        sys.modules.pop("bench_layers", None)
    return bundle, f"bench-{params}", width


def start_servers(
    bundle: Path, name: str, folder: Path, serve_args: list[str]
) -> tuple[Server, Server]:
    env = dict(os.environ, PYTHONPATH=str(folder / "src"), TF_CPP_MIN_LOG_LEVEL="3")
    ours_port, peer_port, grpc_port = _free_port(), _free_port(), _free_port()
    ours = Server(
        [sys.executable, "-m", "bundler", "serve", str(bundle), "--port", str(ours_port),
         "--grpc-port", str(grpc_port), *serve_args],
        env, folder / "bundle-serve.log", ours_port,
    )  # fmt: skip
    peer = Server(
        [sys.executable, str(HERE / "plain_kserve.py"), "--model_path",
         str(bundle / "model.keras"), "--model_name", name, "--http_port", str(peer_port),
         "--grpc_port", str(_free_port()), "--custom_module", "bench_layers"],
        env, folder / "plain-kserve.log", peer_port,
    )  # fmt: skip
    ours.wait_ready(name)
    peer.wait_ready(name)
    return ours, peer


def measure(
    ours: Server, peer: Server, name: str, body: bytes, clients: int, seconds: float, rounds: int
) -> dict[str, Any]:
    turns: dict[str, list[dict[str, Any]]] = {"ours": [], "peer": []}
    run_clients(ours.port, name, body, clients, min(1.0, seconds))  # warm both up, untimed
    run_clients(peer.port, name, body, clients, min(1.0, seconds))
    for _ in range(rounds):
        for which in ("ours", "peer", "peer", "ours"):  # ABBA
            server = ours if which == "ours" else peer
            turns[which].append(run_clients(server.port, name, body, clients, seconds))
    a, b = _pool(turns["ours"]), _pool(turns["peer"])
    return {
        "clients": clients,
        "bundle_serve": a,
        "plain_kserve": b,
        "throughput_ratio": a["requests_per_s"] / b["requests_per_s"],
        "p50_ratio": a["p50_ms"] / b["p50_ms"],
        "p99_ratio": a["p99_ms"] / b["p99_ms"],
    }


def reload_under_load(
    ours: Server, bundle: Path, name: str, body: bytes, clients: int, folder: Path
) -> dict[str, Any]:
    """Clients ask throughout a refused reload (a damaged copy) and an accepted one (a good copy);
    ``current`` flips as a deploy flips it. Returns statuses and errors seen."""
    damaged = folder / "damaged"
    good = folder / "good"
    for copy in (damaged, good):
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(bundle, copy)
    with (damaged / "model.keras").open("ab") as stream:
        stream.write(b"\0")
    done = threading.Event()
    verdicts = []
    outcome: dict[str, Any] = {}

    def ask() -> None:
        outcome.update(_until(ours.port, name, body, clients, done))

    asker = threading.Thread(target=ask)
    asker.start()
    try:
        time.sleep(1.0)
        for target in (damaged, good):  # refused, then reloaded
            link = folder / "current"
            staged = folder / "current.new"
            staged.unlink(missing_ok=True)
            staged.symlink_to(target)
            os.replace(staged, link)
            since = len(ours.log.read_text(errors="replace"))
            ours.process.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                text = ours.log.read_text(errors="replace")[since:]
                found = re.search(rf"reloaded {name}|reload of {name} (refused|failed)", text)
                if found:
                    verdicts.append(found.group(0))
                    break
                time.sleep(0.05)
            time.sleep(0.5)
    finally:
        done.set()
        asker.join()
    return {"verdicts": verdicts, **outcome}


def _until(
    port: int, name: str, body: bytes, clients: int, done: threading.Event
) -> dict[str, Any]:
    statuses: dict[int, int] = {}
    errors: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        infer = client(port, name, body)
        while not done.is_set():
            try:
                status = infer()
            except (OSError, http.client.HTTPException) as error:
                errors.append(f"{type(error).__name__}: {error}")
                infer = client(port, name, body)
                continue
            with lock:
                statuses[status] = statuses.get(status, 0) + 1

    threads = [threading.Thread(target=work) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"statuses": {str(k): v for k, v in sorted(statuses.items())}, "errors": errors[:5]}


def print_table(size: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n{size} parameters: bundle serve (A) vs plain KServe model (B), one row a request")
    print(
        f"{'clients':>7}  {'A req/s':>8} {'B req/s':>8} {'A/B':>6}  "
        f"{'A p50':>7} {'B p50':>7} {'A/B':>6}  {'A p99':>7} {'B p99':>7} {'A/B':>6}"
    )
    for entry in rows:
        a, b = entry["bundle_serve"], entry["plain_kserve"]
        print(
            f"{entry['clients']:>7}  {a['requests_per_s']:>8.1f} {b['requests_per_s']:>8.1f} "
            f"{entry['throughput_ratio']:>5.2f}x  {a['p50_ms']:>5.1f}ms {b['p50_ms']:>5.1f}ms "
            f"{entry['p50_ratio']:>5.2f}x  {a['p99_ms']:>5.1f}ms {b['p99_ms']:>5.1f}ms "
            f"{entry['p99_ratio']:>5.2f}x"
        )
        bad = {k: v for k, v in {**a["statuses"], **b["statuses"]}.items() if k != "200"}
        if bad or a["errors"] or b["errors"]:
            print(f"         not 200: {bad}, connection errors: {a['errors']} / {b['errors']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="parameter counts (%(default)s)")
    parser.add_argument("--clients", default=DEFAULT_CLIENTS, help="client counts (%(default)s)")
    parser.add_argument("--seconds", type=float, default=5.0, help="one turn (%(default)s)")
    parser.add_argument("--rounds", type=int, default=1, help="ABBA rounds (%(default)s)")
    parser.add_argument("--serve-args", default="", help="extra `bundle serve` options, quoted")
    parser.add_argument("--no-reload", action="store_true", help="skip the reload check")
    parser.add_argument("--out", type=Path, help="results JSON (default: benchmarks/results/)")
    args = parser.parse_args(argv)
    clients = [int(count) for count in args.clients.split(",")]
    results: dict[str, Any] = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "seconds": args.seconds,
        "rounds": args.rounds,
        "serve_args": args.serve_args,
        "sizes": {},
    }
    work = Path(tempfile.mkdtemp(prefix="serve-peer-"))
    try:
        for size in args.sizes.split(","):
            params = parse_size(size)
            folder = work / size
            print(f"... building and starting {size}", file=sys.stderr)
            bundle, name, width = build(folder, params)
            link = folder / "current"
            link.symlink_to(bundle)
            row = [float(i % 7) / 7 for i in range(width)]
            body = json.dumps(
                {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, width], "data": row}]}
            ).encode()
            ours, peer = start_servers(link, name, folder, args.serve_args.split())
            try:
                rows = []
                for count in clients:
                    print(f"... {size}, {count} clients", file=sys.stderr)
                    rows.append(measure(ours, peer, name, body, count, args.seconds, args.rounds))
                print_table(size, rows)
                entry: dict[str, Any] = {"params": params, "rows": rows}
                if not args.no_reload and size == args.sizes.split(",")[-1]:
                    checked = reload_under_load(ours, bundle, name, body, 8, folder)
                    print(f"reload under load (8 clients): {checked}")
                    entry["reload_under_load"] = checked
                results["sizes"][size] = entry
            finally:
                ours.stop()
                peer.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["load_average_at_end"] = os.getloadavg()
    out = args.out or HERE / "results" / (
        "serve-peer-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + ".json"
    )
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
