"""Rehearsing the load: a fresh interpreter loads the bundle just built, the way a service will.

``bundle verify`` predicts a load from the lock; only a load proves one. So before the build
renames its folder into place, a second Python process runs ``load_bundle`` on it (policy
``strict``, the golden examples replayed) and reports back; a bundle that does not load there is
refused at build, with what failed in the user's terms (``rehearsal_verdict``).

**What the fresh interpreter sees** is what a service has: the installed distributions and the
declared components, not the factory, the manifest's other ``paths``, the current folder or the
build's run-time ``sys.path`` changes (``rehearsal_view``: the folders hidden, and a folder of
links to each component's top-level package that it would not find otherwise, named as the
build's other temporaries (``atomic``), so a killed build's leftover is removed by the next build
of the same target).

**Policy** ``strict``: a fresh build pins every component ``exact``, so anything else in the fresh
interpreter (another version or other code found first, an adapter needed) is a difference between
build and service that must be seen, not absorbed; and ``strict`` never falls back to the
SavedModel graph, which would hide a Keras model that cannot load.

**Overlap**: the interpreter is started when the build starts and imports Keras (and TensorFlow)
while the build exports; it is handed the folder once the lock is written and the build waits for
its verdict only then. The verdict comes as one JSON line on a pipe of its own (never stdout or
stderr, where TensorFlow and user code write what they like; those go to a temporary file whose
last line is quoted when the interpreter dies). The load is given ``BUNDLER_REHEARSAL_TIMEOUT``
seconds (default 300) from the moment the interpreter has both started and the folder; its
start-up gets as long, and never less than two minutes. The interpreter runs in its own session,
is killed with its process group when the build ends, however it ends, and on Linux dies with the
build (``PR_SET_PDEATHSIG``) even when the build is killed with SIGKILL.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NoReturn

from bundler.build.rehearsal.verdict import explain_failure, last_line
from bundler.build.rehearsal.view import (
    environment,
    hidden_folders,
    interpreter_options,
    link_package,
    to_link,
    top_levels,
)
from bundler.errors import BuildError, UsageError
from bundler.files.atomic import temporary_beside
from bundler.manifest.reader import ManifestSource
from bundler.strict_json import loads as strict_loads
from bundler.types import Policy

POLICY: Policy = "strict"
TIMEOUT_VARIABLE = "BUNDLER_REHEARSAL_TIMEOUT"
DEFAULT_TIMEOUT = 300.0
STARTUP_MINIMUM = 120.0
"""The least the build waits for the interpreter to start (importing TensorFlow on a loaded
machine can take a minute), whatever ``BUNDLER_REHEARSAL_TIMEOUT`` allows the load itself."""
MARKER = "bundler-rehearsal"
"""The fresh interpreter's first argument: how it is told apart in a process list."""
MESSAGE_LIMIT = 1 << 20

# The fresh interpreter's first lines: the standard library only, since what it may import is
# what this sets up. It reports where it finds each top-level module the build asks about, imports
# Keras while the build still runs, waits for the folder, then loads it through bundler's own code.
# Its messages, one JSON line each on the channel: {"found": ...}, {"ready": seconds}, the verdict.
BOOTSTRAP = """\
import ctypes, json, os, sys, time
started = time.perf_counter()
try:
    ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG = SIGKILL: die with the build (Linux)
except Exception:
    pass
setup = json.loads(sys.argv[2])
if os.getppid() != setup["parent"]:
    os._exit(70)
hidden = set(setup["hidden"])
sys.path[:] = [p for p in sys.path if p and os.path.realpath(p) not in hidden]
channel = os.fdopen(setup["channel"], "w", encoding="utf-8")
def send(message):
    channel.write(json.dumps(message) + "\\n")
    channel.flush()
import importlib.util
def where(name):
    try:
        spec = importlib.util.find_spec(name)
    except Exception:
        return None
    if spec is None:
        return None
    origin = spec.origin if spec.has_location and spec.origin else None
    return {
        "origin": os.path.realpath(origin) if origin else None,
        "locations": [os.path.realpath(p) for p in spec.submodule_search_locations or ()],
    }
send({"found": {name: where(name) for name in setup["names"]}})
try:
    import keras  # what every load imports, imported while the build still exports
except BaseException:
    pass  # the load below fails on it, and says why
send({"ready": round(time.perf_counter() - started, 3)})
line = sys.stdin.readline()
if not line:
    os._exit(0)
request = json.loads(line)
sys.path[:0] = request["path"]
import threading
def orphaned():
    sys.stdin.read()  # the build closes the pipe when it is done with us, or dies
    os._exit(0)
threading.Thread(target=orphaned, daemon=True).start()
try:
    from bundler.build.rehearsal.child import rehearse
    verdict = rehearse(request)
except BaseException as error:
    verdict = {"ok": False, "error": {"type": type(error).__name__, "message": str(error)}}
send(verdict)
os._exit(0)
"""


def rehearsal_timeout() -> float:
    """Seconds the rehearsal's load may take (``BUNDLER_REHEARSAL_TIMEOUT``, default 300)."""
    text = os.environ.get("BUNDLER_REHEARSAL_TIMEOUT", "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise UsageError(
            f"{text!r} is not a positive number of seconds", field=TIMEOUT_VARIABLE, value=text
        )
    return value


@dataclass(frozen=True)
class RehearsalReport:
    """What the build says about its rehearsal: whether a fresh interpreter loaded the bundle,
    how many golden examples it replayed, how long it ran and how long the build waited for it."""

    rehearsed: bool
    examples: int = 0
    seconds: float | None = None  # the fresh interpreter's life, from its start to its verdict
    waited: float | None = None  # what the build waited for it once the lock was written
    startup: float | None = None  # what it spent starting (importing Keras and TensorFlow)

    def lock_entry(self) -> dict[str, Any]:
        """The lock's ``rehearsal`` field: provenance, outside the digest; no timings, so that a
        rebuild under ``SOURCE_DATE_EPOCH`` writes the same lock."""
        return {"rehearsed": self.rehearsed, "examples": self.examples}

    def to_json(self) -> dict[str, Any]:
        return {
            "rehearsed": self.rehearsed,
            "examples": self.examples,
            "seconds": None if self.seconds is None else round(self.seconds, 3),
            "waited": None if self.waited is None else round(self.waited, 3),
            "startup": None if self.startup is None else round(self.startup, 3),
        }


NOT_REHEARSED = RehearsalReport(rehearsed=False)


class _Failed(Exception):
    """The rehearsal ended without a verdict: why, in words for the BuildError."""


class _Channel:
    """The verdict pipe's reading end: JSON objects, one a line, read with a deadline."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""
        self.ended = False

    def read(self, deadline: float) -> dict[str, Any] | None:
        """The next message; None once the other end is closed; TimeoutError at ``deadline``."""
        while b"\n" not in self.buffer:
            if self.ended:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            ready, _, _ = select.select([self.fd], [], [], min(remaining, 1.0))
            if not ready:
                continue
            chunk = os.read(self.fd, 1 << 16)
            self.ended = not chunk
            self.buffer += chunk
            if len(self.buffer) > MESSAGE_LIMIT:
                raise _Failed(f"its report was larger than {MESSAGE_LIMIT} bytes")
        line, _, self.buffer = self.buffer.partition(b"\n")
        try:
            message = strict_loads(line)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            raise _Failed(f"its report was not a JSON object: {line[:80]!r}")
        return message


class Rehearsal:
    """A fresh interpreter that will load the bundle being built: ``start`` it early,
    ``hand_over`` the folder once its lock is written, then wait for its ``verdict``; ``close``
    ends it (and removes what it was given) whatever happened, and may be called again."""

    def __init__(self, source: ManifestSource) -> None:
        self.source = source
        self.timeout = rehearsal_timeout()
        self.startup_limit = max(self.timeout, STARTUP_MINIMUM)
        self.started = time.monotonic()
        self.handed_at: float | None = None
        self.farm: Path | None = None
        self.closed = False
        self.hidden = hidden_folders(source)
        # its stdout and stderr, for the last line it printed if it dies; closed by close()
        self.output: IO[bytes] = tempfile.TemporaryFile(prefix="bundler-rehearsal-")  # noqa: SIM115
        read_end, write_end = os.pipe()
        setup = {
            "channel": write_end,
            "parent": os.getpid(),
            "hidden": self.hidden,
            "names": top_levels(source),
        }
        command = [sys.executable, *interpreter_options(), "-c", BOOTSTRAP, MARKER]
        try:
            self.process = subprocess.Popen(
                [*command, json.dumps(setup)],
                stdin=subprocess.PIPE,
                stdout=self.output,
                stderr=subprocess.STDOUT,
                pass_fds=(write_end,),
                cwd=tempfile.gettempdir(),
                env=environment(self.hidden),
                start_new_session=True,  # a terminal's Ctrl-C is for the build to handle
            )
        except OSError as error:
            os.close(read_end)
            self.output.close()
            raise BuildError(
                f"cannot start a fresh interpreter to rehearse the load: {error}",
                path=source.path,
            ) from error
        finally:
            os.close(write_end)  # the interpreter holds the only writing end: EOF when it ends
        self.channel = _Channel(read_end)

    @classmethod
    def start(cls, source: ManifestSource) -> Rehearsal:
        """Start the fresh interpreter now, so that its imports overlap the build's work."""
        return cls(source)

    def hand_over(self, workdir: Path, target: Path) -> None:
        """Give the fresh interpreter the finished folder (its lock written) to load; ``target``
        is where the build will put it, beside which the folder of links is made."""
        self.handed_at = time.monotonic()
        found = self._expect("found", self.handed_at + self.startup_limit)
        if not isinstance(found, dict):
            self._fail("its first report did not say what it can import")
        request = {"bundle": str(workdir), "path": self._links(found, target), "policy": POLICY}
        assert self.process.stdin is not None
        try:
            self.process.stdin.write((json.dumps(request) + "\n").encode())
            self.process.stdin.flush()
        except BrokenPipeError:
            self._fail(self._ended())

    def verdict(self) -> RehearsalReport:
        """Wait for the fresh interpreter's load: its report, or a BuildError saying what failed
        (the interpreter is ended first)."""
        if self.handed_at is None:
            raise RuntimeError("hand_over() first")
        startup = self._expect("ready", self.handed_at + self.startup_limit)
        loading = max(self.handed_at, time.monotonic())
        message = self._message(loading + self.timeout, self.timeout)
        if message.get("ok") is not True:
            self._refuse(message)
        now = time.monotonic()
        examples = message.get("examples")
        return RehearsalReport(
            True,
            examples if isinstance(examples, int) else 0,
            seconds=now - self.started,
            waited=now - self.handed_at,
            startup=startup if isinstance(startup, float) else None,
        )

    def close(self) -> None:
        """End the fresh interpreter (and anything it started), and remove the folder of links."""
        if self.closed:
            return
        self.closed = True
        process = self.process
        if process.poll() is None:  # not reaped: its process group cannot be another's yet
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.kill()
        process.wait()
        if process.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                process.stdin.close()
        os.close(self.channel.fd)
        self.output.close()
        if self.farm is not None:
            shutil.rmtree(self.farm, ignore_errors=True)  # links only: their targets stay

    def __enter__(self) -> Rehearsal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the protocol ---------------------------------------------------------------------------

    def _message(self, deadline: float, limit: float, what: str = "finish") -> dict[str, Any]:
        """The next message; a BuildError (the interpreter ended first) when none comes in time."""
        try:
            message = self.channel.read(deadline)
        except TimeoutError:
            self._fail(
                f"it did not {what} within {limit:g} s (set {TIMEOUT_VARIABLE} to wait longer, "
                "or build with --no-rehearse to skip it); it was stopped"
            )
        except _Failed as failure:
            self._fail(str(failure))
        if message is None:
            self._fail(self._ended())
        return message

    def _expect(self, key: str, deadline: float) -> Any:
        """The value of the start-up message ``key``, the next one the protocol says comes."""
        message = self._message(deadline, self.startup_limit, "start")
        if key not in message:
            if "ok" in message:  # a verdict already: the interpreter could not start its work
                self._refuse(message)
            self._fail(f"it reported {sorted(message)!r} where {key!r} was expected")
        return message[key]

    def _links(self, found: dict[str, Any], target: Path) -> list[str]:
        """The folder of links to put first on the interpreter's path (``rehearsal_view``),
        made only for what it does not find where the build imported it from."""
        missing = to_link(self.source, found)
        if not missing:
            return []
        self.farm = temporary_beside(target)
        try:
            self.farm.mkdir()
            for name in missing:
                link_package(name, self.farm)
        except OSError as error:
            self._fail(f"cannot make the folder of links to the components: {error}")
        return [str(self.farm)]

    # -- failures -------------------------------------------------------------------------------

    def _refuse(self, message: dict[str, Any]) -> NoReturn:
        """The BuildError for a load the fresh interpreter reports failed."""
        self.close()
        error = message.get("error")
        reason, details = explain_failure(error if isinstance(error, dict) else {}, self.source)
        raise BuildError(
            "the bundle does not load where a service would load it (a fresh interpreter with "
            f"only the installed packages and the declared components): {reason}",
            path=self.source.path,
            details=details,
        )

    def _fail(self, why: str) -> NoReturn:
        self.close()
        raise BuildError(
            f"rehearsing the load in a fresh interpreter failed: {why}", path=self.source.path
        )

    def _ended(self) -> str:
        """How the interpreter ended, with the last line it printed."""
        try:
            code = self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return "it closed its report pipe without a verdict"
        if code < 0:
            try:
                how = f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        else:
            how = f"exited with code {code}"
        said = last_line(self.output)
        return f"it {how} before reporting" + (f"; its last output: {said}" if said else "")
