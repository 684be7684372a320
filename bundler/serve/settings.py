"""``bundle serve``'s knobs and their defaults, in one place the command line reads without
importing KServe; ``docs/serving.md`` says why each default is what it is.

- Batching: ``max_batch_size`` 32 rows, ``batch_timeout_ms`` 0 (a request never waits for
  others when the model is idle: under load the queue fills while the model runs, and that
  batches by itself; measured in ``benchmarks/serve_peer.py``), ``max_queue`` 256 requests.
- Limits on clients: a 64 MiB request body (Triton's default), 10 s for a request's headers and
  30 s for its body.
"""

from __future__ import annotations

import argparse

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_GRPC_PORT = 8081  # KServe's
DEFAULT_MAX_BATCH_SIZE = 32
DEFAULT_BATCH_TIMEOUT_MS = 0.0
DEFAULT_MAX_QUEUE = 256
RETRY_AFTER_SECONDS = 1
DEFAULT_MAX_BODY_SIZE = 64 * 1024 * 1024
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 30.0

_UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3}


def byte_size(text: str) -> int:
    """``65536``, ``64K``, ``64M``, ``1G`` (powers of 1024) as a number of bytes above 0."""
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    scale = _UNITS.get(value[-1:], 1)
    number = value[:-1] if value[-1:] in _UNITS else value
    try:
        size = int(float(number) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 65536, 64K, 64M)") from None
    if size <= 0:
        raise argparse.ArgumentTypeError(f"not a size above 0: {text!r}")
    return size
