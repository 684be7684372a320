"""How ``bundle`` writes to a terminal: colour, sizes, progress, strict JSON, quiet TensorFlow.

Every command's output goes through these, so that colour obeys ``NO_COLOR`` and ``TERM=dumb``
everywhere, sizes read alike in every command, stages and progress appear only on a terminal
(bytes only for big bundles), and ``--json`` documents are strict JSON (no NaN). Text read from
bundles is escaped by ``bundler.text.shown`` before it gets here.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from bundler.text import shown

if TYPE_CHECKING:
    from bundler.compat.plan import Plan


class Style:
    """Colour on a terminal only, and never when NO_COLOR is set."""

    def __init__(self, stream: TextIO) -> None:
        self.enabled = (
            stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
        )

    def __call__(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.enabled else text

    def ok(self, text: str) -> str:
        return self(text, "32;1")

    def bad(self, text: str) -> str:
        return self(text, "31;1")

    def dim(self, text: str) -> str:
        return self(text, "2")


def human_size(count: float) -> str:
    """A byte count as people read it: ``288 B``, ``55.3 KB``, ``1.2 GB`` (powers of 1000)."""
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"


class Progress:
    """Bytes hashed, on one rewritten stderr line, for big bundles on a terminal only.

    Big means ``BUNDLER_PROGRESS_MIN_BYTES`` (default 200 MB): small bundles hash in a blink.
    """

    def __init__(self, label: str, total: int, enabled: bool) -> None:
        self.label = label
        self.total = total
        self.done = 0
        try:
            threshold = int(os.environ.get("BUNDLER_PROGRESS_MIN_BYTES", 200_000_000))
        except ValueError:
            threshold = 200_000_000
        self.enabled = enabled and total >= threshold and sys.stderr.isatty()
        self.started = time.perf_counter()
        self.shown = 0.0

    def __call__(self, count: int) -> None:
        self.done += count  # a race between threads only skews the display, never the result
        now = time.perf_counter()
        if self.enabled and now - self.shown > 0.1:
            self.shown = now
            rate = self.done / max(now - self.started, 1e-9)
            sys.stderr.write(
                f"\r{self.label}: {human_size(self.done)} / {human_size(self.total)} "
                f"({human_size(rate)}/s)   "
            )
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 70 + "\r")
            sys.stderr.flush()


class Stages:
    """The stages of a push or pull on stderr, for a terminal only, as a build shows its own: a
    dim line as each begins (``  uploading...``), and below it the stage's bytes on one rewritten
    line (big transfers only, as ``Progress`` decides). Call it as the ``on_stage`` of
    ``bundler.registry.api.push``/``pull``; ``close()`` clears the last bytes line before the
    result."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.style = Style(sys.stderr)
        self.meter: Progress | None = None

    def __call__(self, what: str, total: int) -> Progress | None:
        self.close()
        if self.enabled:
            sys.stderr.write(self.style.dim(f"  {what}...") + "\n")
            sys.stderr.flush()
        self.meter = Progress(f"  {what}", total, enabled=self.enabled)
        return self.meter

    def close(self) -> None:
        if self.meter is not None:
            self.meter.close()
            self.meter = None


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities (a drifted example's difference) as null: not JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def print_json(document: Any) -> None:
    """``document`` on stdout as one indented, strict JSON document (NaN and infinities null)."""
    json.dump(_finite(document), sys.stdout, indent=2, sort_keys=False, allow_nan=False)
    sys.stdout.write("\n")
    sys.stdout.flush()  # before any error line on stderr: a terminal shows them in that order


def display_path(path: Path) -> str:
    """``path`` relative to the working folder when it can be, as the user would type it."""
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def plan_lines(plan: Plan) -> list[str]:
    """The plan's table, its lines escaped one by one (the cells quote the lock's versions)."""
    return [shown(line) for line in plan.table().splitlines()]


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with file descriptor 2 closed off: its C++ start-up log lines are written
    before any log level applies. CLI only; a library must not swallow a service's stderr."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        try:
            import keras  # noqa: F401
            import tensorflow  # noqa: F401
        except ImportError:
            pass  # the API reports a missing TensorFlow with its own clear error
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
