"""Serving bundles over HTTP with KServe's model server, and swapping in new ones without a gap.

``bundle serve BUNDLE...`` runs KServe's Python model server (the ``kserve`` package, the same one
a KServe ``InferenceService`` runs as a custom predictor) with one :class:`BundleModel` per bundle,
named by its lock's ``name``. KServe speaks the protocols: the Open Inference Protocol (v2 REST:
``/v2/health/ready``, ``/v2/models/NAME``, ``/v2/models/NAME/infer``) and the v1 protocol
(``/v1/models/NAME:predict``). Requests become ``LoadedBundle.predict`` calls and back
(``serve_protocol``); what this module owns is the one thing a model server usually gets wrong:
**reloads**.

A model is served only once ``load_bundle(..., check_examples=True)`` has verified it, planned it,
loaded it and replayed its golden examples. On SIGHUP (or when ``--watch`` sees the path point at
another bundle) each BUNDLE path is resolved again (``current -> v3`` symlinks followed) and the
new bundle is loaded *beside* the serving one, in a worker thread, through the same call. Only a
bundle that passes everything replaces the old one, by swapping one reference: a request reads
that reference once, so it runs on the old model or the new one, never on half of each, and never
waits for the load. Anything refused leaves the old model serving and is logged with the message
``bundle verify`` / ``load_bundle`` gives.

KServe reads ``sys.argv`` when it is imported (its own options); it is imported here (and in
``serve_protocol``) with the arguments hidden from it, so that ``bundle serve``'s options are
never taken for KServe's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from .errors import BundleError, UsageError
from .load import load_bundle
from .lock_reader import peek_lock
from .serve_protocol import (
    Serving,
    describe,
    v1_inputs,
    v1_outputs,
    v1_request,
    v2_inputs,
    v2_response,
)
from .types import Policy

_argv, sys.argv = sys.argv, sys.argv[:1]
try:
    import kserve
    from kserve.errors import InvalidInput, ModelNotFound
    from kserve.protocol.infer_type import InferRequest
finally:
    sys.argv = _argv

log = logging.getLogger("bundler.serve")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
LOG_FORMAT = "%(asctime)s.%(msecs)03d %(process)s %(name)s %(levelname)s %(message)s"
LOG_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


# -- a bundle loaded for serving, at start and on every reload ------------------------------------


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
    inputs, outputs = describe(loaded)
    return Serving(source, target, loaded, inputs, outputs)


# -- the KServe model -----------------------------------------------------------------------------


def _lock_name(source: Path) -> str:
    name = (peek_lock(source) or {}).get("name")
    return name if isinstance(name, str) and name else source.name


class BundleModel(kserve.Model):  # type: ignore[misc]
    """A bundle as a KServe model: ``load()`` is ``load_bundle``, ``reload()`` swaps safely.

    Usable on its own as a KServe custom predictor::

        model = BundleModel("/mnt/models/current")
        model.load()
        kserve.ModelServer().start([model])
    """

    def __init__(self, source: str | Path, *, policy: Policy = "adapt") -> None:
        self.source = Path(source)
        self.policy = policy
        # the lock's name, read without verifying; load() checks everything before serving
        super().__init__(_lock_name(self.source))
        self._serving: Serving | None = None
        self._reload_lock = threading.Lock()
        self._seen: tuple[str, str | None] | None = None

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
        """v2: an InferRequest in, an InferResponse out; v1: ``{"instances": [...]}`` (rows) or
        ``{"inputs": ...}`` (columns) in, ``{"predictions": [...]}`` out."""
        serving = self.serving  # read once: a reload during this request does not touch it
        loop = asyncio.get_running_loop()
        if isinstance(payload, InferRequest):
            results = await loop.run_in_executor(None, serving.run, v2_inputs(payload))
            return v2_response(payload, results, self.name, serving.version)
        payload = v1_request(payload)
        results = await loop.run_in_executor(None, serving.run, v1_inputs(payload, serving))
        return {"predictions": v1_outputs(results, rows="instances" in payload)}


# -- the server -----------------------------------------------------------------------------------


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


def _configure_logging() -> None:
    logger = logging.getLogger("bundler")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT, LOG_DATE_FORMAT))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    # KServe's own use of FastAPI, printed once at the first request: not the operator's to fix
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")


def _quiet_request_timings() -> None:
    """KServe logs two timing lines a request, which the access log already answers for. Called
    after KServe has configured its logging, which would reset the level."""
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)


async def _bad_request(request: Any, error: Exception) -> Any:
    """A client's mistake is a 400 with the reason, not a traceback in the server's log."""
    from fastapi.responses import JSONResponse

    return JSONResponse(status_code=400, content={"error": str(error)})


def _check_address(host: str, port: int) -> None:
    """Fail before seconds of loading, not after, when the address cannot be listened on."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as error:
        reason = error.strerror or str(error)
        raise UsageError(f"cannot listen on {host}:{port}: {reason}", value=port) from None


def _metadata_route(models: dict[str, BundleModel]) -> Any:
    async def model_metadata(model_name: str) -> dict[str, Any]:
        model = models.get(model_name)
        if model is None:
            raise ModelNotFound(model_name)
        return model.serving.metadata()

    return model_metadata


def serve(
    bundles: list[str | Path],
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    policy: Policy = "adapt",
    watch: float | None = None,
) -> None:
    """Load every bundle (all must pass), then serve them until SIGTERM or SIGINT.

    Raises the first bundle's BundleError if one cannot be served: nothing listens until every
    bundle is verified, loaded and has replayed its examples.
    """
    from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
    from kserve.model_server import ModelServer, app
    from kserve.protocol.rest.server import RESTServer

    _check_address(host, port)
    _configure_logging()
    models: list[BundleModel] = []
    for source in bundles:
        model = BundleModel(source, policy=policy)
        model.load()
        serving = model.serving
        log.info(
            "serving %s %s %s from %s (%s path, policy %s)",
            serving.name,
            serving.version,
            serving.digest,
            serving.target,
            serving.loaded.mode,
            policy,
        )
        models.append(model)
    by_name: dict[str, BundleModel] = {}
    for model in models:
        if model.name in by_name:
            raise UsageError(
                f"two bundles are named {model.name!r}: {by_name[model.name].source} and "
                f"{model.source}; each name is served once"
            )
        by_name[model.name] = model

    server = ModelServer(http_port=port, enable_grpc=False, enable_latency_logging=False, workers=1)
    _quiet_request_timings()
    for model in models:
        server.register_model(model)
    # KServe's own metadata route drops what its response model does not name; this one, added
    # first, answers the same document plus the bundle's identity (version, digest, mode)
    app.add_api_route("/v2/models/{model_name}", _metadata_route(by_name), methods=["GET"])

    class Server(RESTServer):  # type: ignore[misc]
        def _add_exception_handlers(self, app: Any) -> None:
            super()._add_exception_handlers(app)
            app.add_exception_handler(InvalidInput, _bad_request)

    rest = Server(
        FASTAPI_APP_IMPORT_STRING,
        server.dataplane,
        server.model_repository_extension,
        port,
        grace_period=5,
    )
    rest.config.host = host  # KServe binds every interface; here that is the operator's choice
    reloader = Reloader(models)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        if hasattr(signal, "SIGHUP"):
            loop.add_signal_handler(signal.SIGHUP, reloader.request, "SIGHUP")
        watcher = asyncio.ensure_future(reloader.watch(watch)) if watch else None
        try:
            await rest.start()
        finally:
            if watcher is not None:
                watcher.cancel()
            reloader.executor.shutdown(wait=False, cancel_futures=True)

    asyncio.run(run())
