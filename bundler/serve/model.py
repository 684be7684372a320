"""Serving bundles with KServe's model server, batching their requests and swapping in new ones.

``bundle serve BUNDLE...`` runs KServe's Python model server (the ``kserve`` package, the same one
a KServe ``InferenceService`` runs as a custom predictor) with one :class:`BundleModel` per bundle,
named by its lock's ``name``. KServe speaks the protocols (``bundler.serve.server`` assembles it:
HTTP and gRPC, limits and timeouts); ``serve_protocol`` checks each request against the model's
description (``serve_describe``) and ``serve_batching`` runs the checked requests of one model on
its own worker thread, several in one call. What this module owns is what a model server usually
gets wrong: **reloads**.

A model is served only once ``load_bundle(..., check_examples=True)`` has verified it, planned it,
loaded it and replayed its golden examples. On SIGHUP (or when ``--watch`` sees the path point at
another bundle) each BUNDLE path is resolved again (``current -> v3`` symlinks followed) and the
new bundle is loaded *beside* the serving one, in a worker thread, through the same call. Only a
bundle that passes everything replaces the old one, by swapping one reference: a request reads
that reference once, so it runs on the old model or the new one, never on half of each (a batch
only ever holds requests read against one of them), and never waits for the load. Anything
refused leaves the old model serving and is logged with the message ``bundle verify`` /
``load_bundle`` gives.

KServe reads ``sys.argv`` when it is imported (its own options); it is imported here (and in
``serve_protocol``) with the arguments hidden from it, so that ``bundle serve``'s options are
never taken for KServe's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bundler.errors import BundleError, UsageError
from bundler.load.golden import named_outputs
from bundler.load.loader import LoadedBundle, load_bundle
from bundler.serve.batching import Batcher
from bundler.serve.describe import Description, TensorSpec, describe
from bundler.serve.protocol import (
    check_inputs,
    v1_inputs,
    v1_outputs,
    v1_request,
    v2_inputs,
    v2_response,
)
from bundler.serve.settings import (
    DEFAULT_BATCH_TIMEOUT_MS,
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_QUEUE,
)
from bundler.text import shown
from bundler.types import Policy
from bundler.verify.lock_reader import peek_lock

_argv, sys.argv = sys.argv, sys.argv[:1]
try:
    import kserve
    from kserve.errors import InferenceError, InvalidInput
    from kserve.protocol.infer_type import InferRequest
finally:
    sys.argv = _argv

log = logging.getLogger("bundler.serve")


# -- a bundle loaded for serving, at start and on every reload ------------------------------------


@dataclass(frozen=True, eq=False)
class Serving:
    """What one model name serves right now: never changed, only replaced whole by a reload."""

    source: Path  # the path as given, maybe a symlink (``current``)
    target: Path  # where it pointed when loaded
    loaded: LoadedBundle
    description: Description

    @property
    def name(self) -> str:
        return self.loaded.lock.name

    @property
    def version(self) -> str:
        return self.loaded.lock.version

    @property
    def digest(self) -> str:
        return self.loaded.digest

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.description.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.description.outputs

    @property
    def batchable(self) -> bool:
        """Whether requests may share a call: every input described, its first axis the rows."""
        return bool(self.inputs) and all(spec.shape and spec.shape[0] == -1 for spec in self.inputs)

    def metadata(self) -> dict[str, Any]:
        """The v2 model metadata document, with the bundle's identity in ``parameters``."""
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": "keras" if self.loaded.mode == "keras" else "tensorflow_savedmodel",
            "inputs": [spec.to_json() for spec in self.inputs],
            "outputs": [spec.to_json() for spec in self.outputs],
            "parameters": {
                "digest": self.digest,
                "mode": self.loaded.mode,
                "policy": self.loaded.compatibility.policy,
                "bundle": str(self.target),
            },
        }

    def run(self, arrays: dict[str, Any]) -> dict[str, Any]:
        """Run the model on checked arrays by input name; returns arrays by output name.

        What the model raises on input that passed the checks is logged here, in full; the client
        is told which inputs the model could not run on, never the framework's text.
        """
        feed: Any
        if self.description.feed == "dict" or (len(arrays) > 1 and not self.inputs):
            feed = dict(arrays)
        elif self.description.feed == "list":
            feed = [arrays[spec.name] for spec in self.inputs]
        else:
            feed = next(iter(arrays.values()))
        try:
            return named_outputs(self.loaded.predict(feed))
        except Exception as error:
            kind = type(error).__name__
            log.warning(
                "model %s %s could not run on inputs %s: %s: %s",
                self.name,
                self.version,
                sorted(arrays),
                kind,
                shown(" ".join(str(error).split())[:2000]),
            )
            message = (
                f"model {self.name!r} could not run on inputs {sorted(arrays)}: it raised "
                f"{kind} (the server's log has the details)"
            )
            if isinstance(error, (BundleError, ValueError, TypeError)) or kind in (
                "InvalidArgumentError",
                "OutOfRangeError",
            ):
                raise InvalidInput(message) from None
            raise InferenceError(message) from None


def lock_identity(source: Path) -> tuple[str, str | None]:
    """(resolved target, lock digest) of a BUNDLE path: what ``--watch`` compares. Never raises;
    an unreadable lock reads as no digest, and the reload it triggers reports why."""
    target = os.path.realpath(source)
    document = peek_lock(Path(target)) or {}
    digest = document.get("digest")
    return target, digest if isinstance(digest, str) else None


def load_for_serving(source: str | Path, policy: Policy) -> Serving:
    """Resolve ``source``, then verify, plan, load and replay the golden examples: the only way a
    bundle gets served, at start and on every reload."""
    source = Path(source)
    target = Path(os.path.realpath(source))
    loaded = load_bundle(target, policy=policy, check_examples=True)
    return Serving(source, target, loaded, describe(loaded))


# -- the KServe model -----------------------------------------------------------------------------


def _lock_name(source: Path) -> str:
    name = (peek_lock(source) or {}).get("name")
    return name if isinstance(name, str) and name else source.name


def _run(serving: Serving, arrays: dict[str, Any]) -> dict[str, Any]:
    return serving.run(arrays)


class BundleModel(kserve.Model):  # type: ignore[misc]
    """A bundle as a KServe model: ``load()`` is ``load_bundle``, ``reload()`` swaps safely,
    requests are checked and batched.

    Usable on its own as a KServe custom predictor::

        model = BundleModel("/mnt/models/current")
        model.load()
        kserve.ModelServer().start([model])
    """

    def __init__(
        self,
        source: str | Path,
        *,
        policy: Policy = "adapt",
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        batch_timeout_ms: float = DEFAULT_BATCH_TIMEOUT_MS,
        max_queue: int = DEFAULT_MAX_QUEUE,
    ) -> None:
        self.source = Path(source)
        self.policy = policy
        # the lock's name, read without verifying; load() checks everything before serving
        super().__init__(_lock_name(self.source))
        self._serving: Serving | None = None
        self._reload_lock = threading.Lock()
        self._seen: tuple[str, str | None] | None = None
        self.batcher = Batcher(
            self.name,
            _run,
            max_batch_size=max_batch_size,
            batch_timeout=batch_timeout_ms / 1000,
            max_queue=max_queue,
        )

    @property
    def serving(self) -> Serving:
        if self._serving is None:
            raise RuntimeError(f"model {self.name!r} is not loaded")
        return self._serving

    def load(self) -> bool:
        """Verify, plan, load and replay examples; raises the BundleError load_bundle raises."""
        self._seen = lock_identity(self.source)
        serving = load_for_serving(self.source, self.policy)
        self.name = serving.name
        self.batcher.name = serving.name
        self._serving = serving
        self.ready = True
        return True

    def changed(self) -> bool:
        """Whether the path now names another bundle (another target or lock digest) than the one
        last loaded or refused; what ``--watch`` polls. Reads one small file."""
        return lock_identity(self.source) != self._seen

    def reload(self) -> bool:
        """Load the bundle the path names now beside the serving one; swap only if it passes.

        Returns whether the new bundle is now served. Runs in a worker thread; requests keep
        being answered by the old model throughout, and after a refusal.
        """
        with self._reload_lock:  # one reload of a model at a time
            old = self.serving
            self._seen = lock_identity(self.source)
            started = time.perf_counter()
            try:
                new = load_for_serving(self.source, self.policy)
                if new.name != old.name:
                    raise UsageError(
                        f"the bundle is named {new.name!r}, not {old.name!r}; a reload keeps "
                        "the served name (serve it as another BUNDLE instead)",
                        path=new.target,
                    )
            except BundleError as error:
                log.error(
                    "reload of %s refused, still serving %s %s: %s",
                    old.name,
                    old.version,
                    old.digest,
                    error,
                )
                return False
            except Exception as error:  # a bug must not take the serving model down with it
                log.exception(
                    "reload of %s failed, still serving %s %s: %s: %s",
                    old.name,
                    old.version,
                    old.digest,
                    type(error).__name__,
                    error,
                )
                return False
            self._serving = new  # the swap: one reference, read once per request
            log.info(
                "reloaded %s: now serving %s %s from %s (was %s %s; %.1f s)",
                new.name,
                new.version,
                new.digest,
                new.target,
                old.version,
                old.digest,
                time.perf_counter() - started,
            )
            return True

    def get_input_types(self) -> list[dict[str, Any]]:
        return [spec.to_json() for spec in self.serving.inputs]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [spec.to_json() for spec in self.serving.outputs]

    async def predict(
        self,
        payload: Any,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> Any:
        """v2 (HTTP or gRPC): an InferRequest in, an InferResponse out; v1: ``{"instances":
        [...]}`` (rows) or ``{"inputs": ...}`` (columns) in, ``{"predictions": [...]}`` out."""
        serving = self.serving  # read once: a reload during this request does not touch it
        if isinstance(payload, InferRequest):
            arrays = check_inputs(v2_inputs(payload), serving.description, self.name)
            results = await self.batcher.submit(serving, arrays)
            return v2_response(payload, results, self.name, serving.version)
        payload = v1_request(payload)
        sent = v1_inputs(payload, serving.description, self.name)
        arrays = check_inputs(sent, serving.description, self.name)
        results = await self.batcher.submit(serving, arrays)
        return {"predictions": v1_outputs(results, rows="instances" in payload)}


# -- reloads -----------------------------------------------------------------------------------


class Reloader:
    """Runs reloads one at a time on their own thread, off the event loop; a SIGHUP that arrives
    during a reload is not lost: one more pass follows."""

    def __init__(self, models: list[BundleModel]) -> None:
        self.models = models
        self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="reload")
        self.task: asyncio.Task[None] | None = None
        self.again = False

    def request(self, why: str) -> None:
        if self.task is not None and not self.task.done():
            self.again = True
            return
        self.task = asyncio.ensure_future(self._run(why))

    async def _run(self, why: str) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.again = False
            log.info("%s: reloading %s", why, ", ".join(str(m.source) for m in self.models))
            for model in self.models:
                await loop.run_in_executor(self.executor, model.reload)
            if not self.again:
                return
            why = "SIGHUP during the reload"

    async def watch(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(seconds)
            for model in self.models:
                if await loop.run_in_executor(self.executor, model.changed):
                    log.info("%s now names another bundle: reloading", model.source)
                    await loop.run_in_executor(self.executor, model.reload)
