"""A registry double on 127.0.0.1 that answers what a test tells it to: endless or oversized
manifests, token answers that never end, error bodies, or a manifest a fuzzer wrote, and the
blobs it is given (``blobs``), some of them sent half and then stalled (``stalled``, until the
client hangs up or the double shuts down). Real registries are ``conftest.Registry``; this one is
for what a hostile one can send."""

from __future__ import annotations

import contextlib
import http.server
import threading
from typing import Any


class HostileRegistry(http.server.ThreadingHTTPServer):
    """A registry that answers what the test tells it to: ``answers[path-prefix] = callable``."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.manifest: bytes = b"{}"
        self.mode = "manifest"
        self.blobs: dict[str, bytes] = {}  # digest -> content, served at /v2/.../blobs/<digest>
        self.stalled: set[str] = set()  # digests sent half, then held
        self.closing = threading.Event()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: HostileRegistry

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _endless(self, status: int, headers: dict[str, str], total: int = 1 << 30) -> None:
        """``total`` bytes of JSON-looking whitespace, close-delimited (HTTP/1.0), or until the
        client hangs up."""
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        chunk = b"[" + b" " * ((1 << 20) - 1)
        with contextlib.suppress(OSError):
            for _ in range(total >> 20):
                self.wfile.write(chunk)

    def do_GET(self) -> None:
        mode = self.server.mode
        if self.path.startswith("/token") and mode.startswith("token: "):
            body = mode.removeprefix("token: ").encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path.startswith("/token"):
            self._endless(200, {"Content-Type": "application/json"})
        elif "/manifests/" in self.path and mode == "endless manifest":
            self._endless(200, {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        elif "/manifests/" in self.path and mode == "declared 2 GiB":
            self.send_response(200)
            self.send_header("Content-Length", str(2 << 30))
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(b"{" * 1000)
        elif "/manifests/" in self.path and (mode == "endless token" or mode.startswith("token")):
            realm = f"http://{self.server.host}/token"
            self.send_response(401)
            self.send_header("WWW-Authenticate", f'Bearer realm="{realm}",service="x"')
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif "/manifests/" in self.path and mode == "endless error body":
            self._endless(500, {"Content-Type": "text/plain"})
        elif "/manifests/" in self.path:
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            self.send_header("Content-Length", str(len(self.server.manifest)))
            self.end_headers()
            self.wfile.write(self.server.manifest)
        elif "/blobs/" in self.path and self.path.rsplit("/", 1)[1] in self.server.blobs:
            digest = self.path.rsplit("/", 1)[1]
            content = self.server.blobs[digest]
            self.send_response(200)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            with contextlib.suppress(OSError):
                if digest in self.server.stalled:
                    self.wfile.write(content[: len(content) // 2])
                    self.wfile.flush()
                    self.server.closing.wait(120)
                else:
                    self.wfile.write(content)
        else:  # the rest: not here
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
