"""Serving bundles over HTTP with KServe's model server, and swapping in new ones without a gap.

``bundle serve BUNDLE...`` runs KServe's Python model server (the ``kserve`` package, the same one
a KServe ``InferenceService`` runs as a custom predictor) with one :class:`BundleModel` per bundle,
named by its lock's ``name``. KServe speaks the protocols: the Open Inference Protocol (v2 REST:
``/v2/health/ready``, ``/v2/models/NAME``, ``/v2/models/NAME/infer``) and the v1 protocol
(``/v1/models/NAME:predict``). This module only turns requests into ``LoadedBundle.predict`` calls
and back, and owns the one thing a model server usually gets wrong: **reloads**.

A model is served only once ``load_bundle(..., check_examples=True)`` has verified it, planned it,
loaded it and replayed its golden examples. On SIGHUP (or when ``--watch`` sees the path point at
another bundle) each BUNDLE path is resolved again (``current -> v3`` symlinks followed) and the
new bundle is loaded *beside* the serving one, in a worker thread, through the same call. Only a
bundle that passes everything replaces the old one, by swapping one reference: a request reads
that reference once, so it runs on the old model or the new one, never on half of each, and never
waits for the load. Anything refused leaves the old model serving and is logged with the message
``bundle verify`` / ``load_bundle`` gives.

Tensors are named as the bundle's golden examples name them: a model's inputs by their Keras (or
SavedModel signature) names, its outputs by their dict keys, else ``output_0``, ``output_1``, ...
in order, so a client sees the same names whether the Keras model or the graph fallback serves.

KServe reads ``sys.argv`` when it is imported (its own options); it is imported here with the
arguments hidden from it, so that ``bundle serve``'s options are never taken for KServe's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import signal
import sys
import threading
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BundleError, UsageError
from .golden import named_outputs
from .load import LoadedBundle, load_bundle
from .lock import LOCK_FILENAME
from .types import Policy

_argv, sys.argv = sys.argv, sys.argv[:1]
try:
    import kserve
    from kserve.errors import InvalidInput, ModelNotFound
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
    from kserve.utils.numpy_codec import from_np_dtype
finally:
    sys.argv = _argv

log = logging.getLogger("bundler.serve")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
LOG_FORMAT = "%(asctime)s.%(msecs)03d %(process)s %(name)s %(levelname)s %(message)s"
LOG_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


# -- what a model takes and returns ---------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as the Open Inference Protocol describes it (-1: any size)."""

    name: str
    datatype: str  # FP32, INT64, BYTES, ...
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def _datatype(dtype: Any) -> str:
    import numpy as np

    name = getattr(dtype, "name", str(dtype))
    if name in ("string", "object"):
        return "BYTES"
    if name == "bfloat16":
        return "BF16"
    found = from_np_dtype(np.dtype(getattr(dtype, "as_numpy_dtype", name)))
    return str(found) if found else name.upper()


def _shape(shape: Any) -> tuple[int, ...]:
    dims = shape.as_list() if hasattr(shape, "as_list") else list(shape)
    return tuple(-1 if dim is None else int(dim) for dim in dims)


def _positional_names(structure: Any, count: int) -> list[str]:
    if isinstance(structure, dict):
        return [str(key) for key in structure]
    return [f"output_{index}" for index in range(count)]


def describe(loaded: LoadedBundle) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The model's inputs and outputs, from the Keras model or the SavedModel signature.

    A subclassed Keras model that was never called symbolically has no recorded inputs: it is
    described with empty lists, and fed its single input positionally.
    """
    if loaded.mode == "graph":
        signature = loaded.model.signatures["serving_default"]
        specs = signature.structured_input_signature[1]
        inputs = tuple(
            TensorSpec(name, _datatype(spec.dtype), _shape(spec.shape))
            for name, spec in specs.items()
        )
        outputs_by_name = signature.structured_outputs
        names = list(outputs_by_name)
        if all(name.startswith("output_") and name[7:].isdigit() for name in names):
            names.sort(key=lambda k: (len(k), k))  # positional outputs, in order
        outputs = tuple(
            TensorSpec(
                name, _datatype(outputs_by_name[name].dtype), _shape(outputs_by_name[name].shape)
            )
            for name in names
        )
        return inputs, outputs
    model = loaded.model
    try:
        tensors_in = list(model.inputs or [])
        tensors_out = list(model.outputs or [])
        structure_in = model.input if tensors_in else None
        structure_out = model.output if tensors_out else None
    except (AttributeError, ValueError):
        return (), ()
    if isinstance(structure_in, dict):  # a model called with a dict is fed by its keys
        named_in = [(str(key), tensor) for key, tensor in structure_in.items()]
    else:
        named_in = [(str(tensor.name), tensor) for tensor in tensors_in]
    inputs = tuple(TensorSpec(name, _datatype(t.dtype), _shape(t.shape)) for name, t in named_in)
    names = _positional_names(structure_out, len(tensors_out))
    if isinstance(structure_out, dict):
        tensors_out = [structure_out[name] for name in names]
    outputs = tuple(
        TensorSpec(name, _datatype(t.dtype), _shape(t.shape))
        for name, t in zip(names, tensors_out, strict=True)
    )
    return inputs, outputs


# -- one loaded bundle, as served -----------------------------------------------------------------


@dataclass(frozen=True)
class Serving:
    """What one model name serves right now: never changed, only replaced whole by a reload."""

    source: Path  # the path as given, maybe a symlink (``current``)
    target: Path  # where it pointed when loaded
    loaded: LoadedBundle
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def name(self) -> str:
        return self.loaded.lock.name

    @property
    def version(self) -> str:
        return self.loaded.lock.version

    @property
    def digest(self) -> str:
        return self.loaded.digest

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

    def run(self, named: dict[str, Any]) -> dict[str, Any]:
        """Run the model on arrays by input name; returns arrays by output name."""
        import numpy as np

        if self.inputs:
            expected = [spec.name for spec in self.inputs]
            unknown = sorted(set(named) - set(expected))
            missing = [name for name in expected if name not in named]
            if len(expected) == 1 and len(named) == 1 and unknown:
                named = {expected[0]: next(iter(named.values()))}  # one input: any name will do
            elif unknown or missing:
                raise InvalidInput(
                    f"model {self.name!r} takes inputs {expected}; got {sorted(named)}"
                )
            arrays = {
                spec.name: np.asarray(named[spec.name], dtype=_numpy_dtype(spec.datatype))
                for spec in self.inputs
            }
            for spec in self.inputs:
                shape = arrays[spec.name].shape
                if len(shape) != len(spec.shape) or any(
                    want not in (-1, got) for want, got in zip(spec.shape, shape, strict=False)
                ):
                    raise InvalidInput(
                        f"input {spec.name!r} has shape {list(shape)}; model {self.name!r} "
                        f"takes {list(spec.shape)} (-1: any size)"
                    )
        elif len(named) == 1:
            arrays = dict(named)
        else:
            raise InvalidInput(f"model {self.name!r} takes one input; got {sorted(named)}")
        feed: Any = next(iter(arrays.values())) if len(arrays) == 1 else arrays
        if len(arrays) > 1 and self.loaded.mode == "keras":
            structure = getattr(self.loaded.model, "input", None)
            if isinstance(structure, (list, tuple)):
                feed = [arrays[spec.name] for spec in self.inputs]
        try:
            return named_outputs(self.loaded.predict(feed))
        except BundleError as error:
            raise InvalidInput(str(error)) from error
        except (ValueError, TypeError) as error:
            raise InvalidInput(_short(f"{type(error).__name__}: {error}")) from error
        except Exception as error:
            # TensorFlow's InvalidArgumentError (a wrong shape) is no subclass of ValueError
            if type(error).__name__ == "InvalidArgumentError":
                raise InvalidInput(_short(f"{type(error).__name__}: {error}")) from error
            raise


def _numpy_dtype(datatype: str) -> Any:
    from kserve.utils.numpy_codec import to_np_dtype

    return to_np_dtype(datatype) if datatype != "BF16" else "float32"


def _short(text: str, limit: int = 600) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def lock_identity(source: Path) -> tuple[str, str | None]:
    """(resolved target, lock digest) of a BUNDLE path: what ``--watch`` compares. Never raises;
    an unreadable lock reads as no digest, and the reload it triggers reports why."""
    target = os.path.realpath(source)
    try:
        digest = json.loads((Path(target) / LOCK_FILENAME).read_text()).get("digest")
    except (OSError, ValueError, AttributeError):
        digest = None
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
    try:
        name = json.loads((source / LOCK_FILENAME).read_text()).get("name")
    except (OSError, ValueError, AttributeError):
        name = None
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
            named = {tensor.name: tensor.as_numpy() for tensor in payload.inputs}
            results = await loop.run_in_executor(None, serving.run, named)
            outputs = []
            for name, array in results.items():
                output = InferOutput(name, list(array.shape), from_np_dtype(array.dtype) or "BYTES")
                output.set_data_from_numpy(array, binary_data=payload.use_binary_outputs)
                outputs.append(output)
            return InferResponse(
                response_id=payload.id or str(uuid.uuid4()),
                model_name=self.name,
                model_version=serving.version,
                infer_outputs=outputs,
                use_binary_outputs=payload.use_binary_outputs,
            )
        if isinstance(payload, (bytes, str)):  # JSON sent without a JSON content type
            try:
                payload = json.loads(payload)
            except ValueError as error:
                raise InvalidInput(f"the request body is not JSON: {error}") from None
        if not isinstance(payload, dict):
            raise InvalidInput("expected a JSON object with 'instances' or 'inputs'")
        rows = "instances" in payload
        named = _v1_inputs(payload, serving)
        results = await loop.run_in_executor(None, serving.run, named)
        return {"predictions": _v1_outputs(results, rows)}


def _v1_inputs(payload: dict[str, Any], serving: Serving) -> dict[str, Any]:
    import numpy as np

    if "instances" in payload:
        instances = payload["instances"]
        if not isinstance(instances, list) or not instances:
            raise InvalidInput("'instances' must be a non-empty list")
        if all(isinstance(row, dict) for row in instances):
            names = list(instances[0])
            if any(list(row) != names for row in instances):
                raise InvalidInput("every instance must name the same inputs")
            return {name: np.asarray([row[name] for row in instances]) for name in names}
        return {_single_input(serving): np.asarray(instances)}
    if "inputs" in payload:
        inputs = payload["inputs"]
        if isinstance(inputs, dict):
            return {str(name): np.asarray(value) for name, value in inputs.items()}
        return {_single_input(serving): np.asarray(inputs)}
    raise InvalidInput("expected a JSON object with 'instances' or 'inputs'")


def _single_input(serving: Serving) -> str:
    if len(serving.inputs) > 1:
        names = [spec.name for spec in serving.inputs]
        raise InvalidInput(f"model {serving.name!r} takes inputs {names}: pass a dict by name")
    return serving.inputs[0].name if serving.inputs else "input_0"


def _v1_outputs(results: dict[str, Any], rows: bool) -> Any:
    if len(results) == 1:
        return next(iter(results.values())).tolist()
    if not rows:
        return {name: array.tolist() for name, array in results.items()}
    count = len(next(iter(results.values())))
    return [
        {name: array[index].tolist() for name, array in results.items()} for index in range(count)
    ]


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
