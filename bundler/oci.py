"""Bundles in OCI registries: push, pull into a content-addressed cache, load by reference.

A bundle is pushed as a CNCF ModelPack artifact (the default; its layout is ``bundler.modelpack``)
or, with ``format="bundler"``, as an OCI image manifest of our own artifact type::

    artifactType  application/vnd.bundler.bundle.v1+json
    config        bundle.lock.json              application/vnd.bundler.lock.v1+json
    layers        one per file of the bundle    application/vnd.bundler.file.v1
                  (org.opencontainers.image.title: its path in the bundle)
                  bundle.sig.json / model.sig   application/vnd.bundler.signature.v1+json
    annotations   org.opencontainers.image.{title,version,created,description}, dev.bundler.digest

Both are one layer per file, not archives: a layer's digest *is* the file's sha256 from the lock,
so push sends the files as they are, pull checks every blob against its descriptor while it
streams, and there is nothing to unpack (so no archive path tricks). In a ModelPack artifact the
lock is one of the layers; pull finds it, and every other file, by the layer's path annotation,
and reads only raw layers. Paths are checked like every lock path. A signed bundle's signature
files (``bundle.sig.json``, ``model.sig``) travel as layers too, so ``load_bundle("oci://...",
trusted_keys=...)`` checks the publisher's signature on what it pulled; artifacts pushed without
one pull as before. Pull reads both formats, so artifacts pushed before ModelPack keep working.

A registry is someone on the path, so nothing it sends is believed before it is checked, and
nothing it sends is read without a bound: every answer the client reads whole (a manifest, a token,
an error body) is read in chunks and refused past 4 MiB, *while* it streams, before any parsing;
the lock and the signature are refused when their descriptors claim more than their own limits;
files stream to disk and stop at their descriptor's size. Manifests are parsed strictly (no
duplicate keys, no NaN, bounded numbers and nesting) and type-checked field by field.

Pulls land in ``$BUNDLER_CACHE`` (default ``$XDG_CACHE_HOME/bundler`` or ``~/.cache/bundler``) at
``sha256/<manifest digest>/``: downloaded into a temporary folder beside it, verified as a bundle,
then renamed into place, so concurrent pulls of one digest never leave a partial entry (the loser
discards its copy). The temporary folders are named as a build names its own, so a pull killed
midway leaves one that the next pull removes once its process is gone. A reference by digest
that is in the cache makes no request at all; a tag is resolved with one manifest request.

The protocol is spoken through ``oras`` (``pip install 'bundler[oci]'``), imported only here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from . import strict_json
from .digest import unsafe_path_reason
from .errors import IntegrityError, RegistryError, SignatureError, UsageError
from .layout import (
    DIGEST_PATTERN,
    LOCK_FILENAME,
    LOCK_MAX_BYTES,
    SIGNATURE_FILENAME,
    canonical_json,
)
from .transfer import PullResult, PushFormat, PushResult

ARTIFACT_TYPE = "application/vnd.bundler.bundle.v1+json"
LOCK_MEDIA_TYPE = "application/vnd.bundler.lock.v1+json"
FILE_MEDIA_TYPE = "application/vnd.bundler.file.v1"
SIGNATURE_MEDIA_TYPE = "application/vnd.bundler.signature.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
TITLE = "org.opencontainers.image.title"
MAX_MANIFEST_BYTES = 4 << 20
MAX_ANSWER_BYTES = 4 << 20  # anything else read whole: tokens, error bodies, upload answers
CHUNKED_ABOVE = 32 << 20  # larger blobs go up in PATCH chunks: memory stays flat
CHUNK_BYTES = 16 << 20
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")

_REFERENCE = re.compile(
    r"^oci://(?P<host>[A-Za-z0-9.-]+(?::\d+)?|\[[0-9a-fA-F:]+\](?::\d+)?)"
    r"/(?P<repo>[a-z0-9]+(?:[._/-][a-z0-9]+)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)


@dataclass(frozen=True)
class Reference:
    host: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def local(self) -> bool:
        return self.host.rsplit(":", 1)[0] in LOCAL_HOSTS or self.host.startswith("[::1]")

    def __str__(self) -> str:
        text = f"oci://{self.host}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def is_reference(text: object) -> TypeGuard[str]:
    """Is ``text`` a registry reference (``oci://...``) rather than a folder?"""
    return isinstance(text, str) and text.startswith("oci://")


def parse_reference(text: str) -> Reference:
    match = _REFERENCE.match(text)
    if not match:
        raise UsageError(
            "not a registry reference; expected oci://HOST[:PORT]/REPOSITORY[:TAG][@sha256:...]",
            path=text,
        )
    return Reference(match["host"], match["repo"], match["tag"], match["digest"])


def cache_root() -> Path:
    if os.environ.get("BUNDLER_CACHE"):
        return Path(os.environ["BUNDLER_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bundler"


def credentials(host: str) -> tuple[str, str] | None:
    """(user, password) for ``host``: BUNDLER_REGISTRY_USERNAME/PASSWORD, else docker's config."""
    user = os.environ.get("BUNDLER_REGISTRY_USERNAME")
    password = os.environ.get("BUNDLER_REGISTRY_PASSWORD")
    if user and password:
        return user, password
    folder = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    path = Path(folder) / "config.json"
    try:
        auths = json.loads(path.read_text(encoding="utf-8")).get("auths", {})
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(auths, dict):
        return None
    for key in (host, f"https://{host}", f"http://{host}", f"https://{host}/v2/"):
        entry = auths.get(key)
        if isinstance(entry, dict) and isinstance(entry.get("auth"), str):
            try:
                decoded = base64.b64decode(entry["auth"]).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                raise UsageError(
                    f"the auth entry for {host} is not base64 user:password", path=path
                ) from None
            name, _, secret = decoded.partition(":")
            return name, secret
    return None


def _read_capped(response: Any, limit: int, what: str, where: str) -> bytes:
    """The body of ``response``, read in chunks and refused as soon as it passes ``limit``."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        response.close()
        raise IntegrityError(
            f"the registry sent {what} over {limit >> 20} MiB ({int(declared)} bytes declared)",
            path=where,
        )
    body = bytearray()
    try:
        for chunk in response.iter_content(chunk_size=64 << 10):
            body += chunk
            if len(body) > limit:
                raise IntegrityError(
                    f"the registry sent {what} over {limit >> 20} MiB; refusing it", path=where
                )
    finally:
        response.close()
    return bytes(body)


def _bounded_session(session: Any, where: str) -> None:
    """Every answer of ``session`` that its caller reads whole (oras's token requests and error
    bodies too) is read with a cap; streamed answers are left to their caller, who bounds them."""
    from requests.adapters import HTTPAdapter

    class Bounded(HTTPAdapter):
        def send(self, request: Any, stream: bool = False, **kwargs: Any) -> Any:  # type: ignore[override]
            response = super().send(request, stream=True, **kwargs)
            if not stream:
                response._content = _read_capped(response, MAX_ANSWER_BYTES, "an answer", where)
            return response

    for prefix in ("http://", "https://"):
        session.mount(prefix, Bounded())


class _Client:
    """The few registry calls we need, through oras's session, auth and retries."""

    def __init__(self, ref: Reference, insecure: bool) -> None:
        try:
            import oras.container
            import oras.provider
        except ImportError:
            raise UsageError(
                "registry support needs the oras package: pip install 'bundler[oci]'"
            ) from None
        plain_http = insecure or ref.local
        self.registry = oras.provider.Registry(hostname=ref.host, insecure=plain_http)
        _bounded_session(self.registry.session, str(ref))
        found = credentials(ref.host)
        if found is not None:
            self.registry.auth.set_basic_auth(*found)
        self.container = oras.container.Container(
            f"{ref.repository}:{ref.tag or 'latest'}", registry=ref.host
        )
        self.ref = ref
        self.prefix = "http" if plain_http else "https"

    def _request(self, url: str, method: str, **kwargs: Any) -> Any:
        """One request through oras's session and auth, with two quick retries of our own.

        oras's own retry waits up to a minute for a registry that is down; a deploy that cannot
        reach its registry should hear so in seconds.
        """
        import requests

        send = getattr(
            type(self.registry).do_request, "__wrapped__", type(self.registry).do_request
        )
        for attempt in range(3):
            try:
                return send(self.registry, url, method, **kwargs)
            except requests.ConnectionError as error:
                if attempt == 2:
                    raise RegistryError(
                        f"cannot reach the registry: {_reason(error)}", path=str(self.ref)
                    ) from None
                time.sleep(0.25 * (attempt + 1))
            except requests.exceptions.InvalidJSONError as error:  # oras reading a token
                raise RegistryError(
                    f"the registry answered with something that is not JSON: {error}",
                    path=str(self.ref),
                ) from None
            except requests.RequestException as error:
                raise RegistryError(
                    f"cannot reach the registry: {_reason(error)}", path=str(self.ref)
                ) from None
            except ValueError as error:  # oras: "Cannot respond to request for authentication."
                raise RegistryError(
                    f"the registry refused us: {error}", path=str(self.ref)
                ) from None
            except (AttributeError, TypeError, KeyError) as error:  # oras on a malformed token
                raise RegistryError(
                    f"the registry's authentication answer is malformed: {error}",
                    path=str(self.ref),
                ) from None
        raise AssertionError("unreachable")

    def ping(self) -> None:
        """Fail fast, before any upload, when the registry is not there."""
        response = self._request(f"{self.prefix}://{self.ref.host}/v2/", "GET")
        if response.status_code not in (200, 401):
            raise RegistryError(
                f"{self.ref.host} does not answer as an OCI registry ({response.status_code})",
                path=str(self.ref),
            )

    def manifest(self, reference: str) -> tuple[bytes, str]:
        url = f"{self.prefix}://{self.container.manifest_url(reference)}"
        response = self._request(url, "GET", headers={"Accept": MANIFEST_MEDIA_TYPE}, stream=True)
        if response.status_code == 404:
            response.close()
            raise RegistryError(
                f"no artifact {reference!r} in {self.ref.repository}", path=str(self.ref)
            )
        if response.status_code != 200:
            response.close()
            raise RegistryError(
                f"the registry answered {response.status_code} for the manifest", path=str(self.ref)
            )
        body = _read_capped(response, MAX_MANIFEST_BYTES, "a manifest", str(self.ref))
        return body, "sha256:" + hashlib.sha256(body).hexdigest()

    def put_manifest(self, body: bytes, tag: str) -> None:
        url = f"{self.prefix}://{self.container.manifest_url(tag)}"
        response = self._request(
            url, "PUT", data=body, headers={"Content-Type": MANIFEST_MEDIA_TYPE}
        )
        if response.status_code not in (200, 201):
            raise RegistryError(
                f"the registry refused the manifest ({response.status_code}): "
                f"{response.text[:200]}",
                path=str(self.ref),
            )

    def put_blob(self, path: Path, descriptor: dict[str, Any]) -> None:
        large = descriptor["size"] > CHUNKED_ABOVE  # oras's single PUT reads the whole file
        try:
            response = self.registry.upload_blob(
                str(path), self.container, descriptor, do_chunked=large, chunk_size=CHUNK_BYTES
            )
        except Exception as error:
            raise RegistryError(
                f"uploading {path.name} failed: {error}", path=str(self.ref)
            ) from None
        if response.status_code not in (200, 201, 202):
            raise RegistryError(
                f"the registry refused {path.name} ({response.status_code})", path=str(self.ref)
            )

    def put_bytes(self, content: bytes, descriptor: dict[str, Any]) -> None:
        """Upload a small document (a config) that is not a file of the bundle."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="bundler-push-") as folder:
            path = Path(folder) / "config.json"
            path.write_bytes(content)
            self.put_blob(path, descriptor)

    def fetch_blob(self, descriptor: dict[str, Any], target: Path) -> None:
        """Stream one blob to ``target``; refused unless size and sha256 are the descriptor's."""
        digest, size = descriptor["digest"], descriptor["size"]
        url = f"{self.prefix}://{self.container.get_blob_url(digest)}"
        response = self._request(url, "GET", stream=True)
        with response:
            if response.status_code != 200:
                raise RegistryError(
                    f"the registry answered {response.status_code} for blob {digest}",
                    path=str(self.ref),
                )
            hasher, received = hashlib.sha256(), 0
            with target.open("xb") as out:
                for chunk in response.iter_content(chunk_size=1 << 20):
                    received += len(chunk)
                    if received > size:
                        break
                    hasher.update(chunk)
                    out.write(chunk)
        if received != size or "sha256:" + hasher.hexdigest() != digest:
            raise IntegrityError(
                f"the registry served a blob that does not match its digest {digest} "
                f"({received} bytes, expected {size}); refusing it",
                path=str(self.ref),
            )


def _reason(error: Exception) -> str:
    """The innermost reason of a requests error (connection refused, name not known, ...)."""
    reason: BaseException = error
    while reason.__context__ is not None or getattr(reason, "reason", None) is not None:
        inner = getattr(reason, "reason", None) or reason.__context__
        if not isinstance(inner, BaseException) or inner is reason:
            break
        reason = inner
    text = str(reason)
    return text.split("] ", 1)[-1] if text.startswith("[Errno") else text


def _signatures_to_push(root: Path) -> dict[Path, str]:
    """{signature file: its key id} for each signature the bundle carries (``bundle.sig.json``,
    ``model.sig``): each checked to be well-formed and to vouch for this very bundle (a stale
    signature would only fail at every pull)."""
    from .layout import OPENSSF_SIGNATURE_FILENAME
    from .openssf import signed_key_id
    from .signing import read_signature, statement_mismatch

    found: dict[Path, str] = {}
    path = root / SIGNATURE_FILENAME
    if os.path.lexists(path):
        document = read_signature(root)
        field = statement_mismatch(root, document["statement"])
        if field is not None:
            raise SignatureError(
                f"the signature is for another bundle or an earlier lock ({field} differs); "
                "sign the bundle again before pushing it",
                path=path,
            )
        found[path] = str(document["key_id"])
    path = root / OPENSSF_SIGNATURE_FILENAME
    if os.path.lexists(path):
        found[path] = signed_key_id(root)
    return found


PUSH_FORMATS = ("modelpack", "bundler")


def push(
    bundle: str | Path, reference: str, *, insecure: bool = False, format: PushFormat = "modelpack"
) -> PushResult:
    """Verify ``bundle``, then push it (with its signatures, if signed); returns the manifest
    digest and where it went. ``format`` is ``"modelpack"`` (a CNCF ModelPack artifact, see
    ``bundler.modelpack``) or ``"bundler"`` (the lock as the config blob); both pull alike."""
    from . import modelpack
    from .verify import bundle_root, require_intact

    if format not in PUSH_FORMATS:
        raise UsageError(
            f"unknown push format {format!r}; expected one of {', '.join(PUSH_FORMATS)}"
        )
    root = bundle_root(bundle)
    lock = require_intact(root, "the bundle failed verification; refusing to push it").lock
    assert lock is not None  # integrity_ok implies a lock
    signatures = _signatures_to_push(root)
    ref = parse_reference(reference)
    if ref.digest:
        raise UsageError("push to a tag, not a digest (the digest is computed)", path=reference)
    tag = ref.tag or lock.version.replace("+", "_")
    client = _Client(ref, insecure)
    client.ping()
    ours = format == "bundler"

    def layer(path: Path, name: str, media_type: str, digest: str, size: int) -> dict[str, Any]:
        annotations = {TITLE: name} if ours else {modelpack.FILEPATH: name, TITLE: name}
        descriptor = {"mediaType": media_type, "digest": digest, "size": size}
        client.put_blob(path, {**descriptor, "annotations": annotations})
        return {**descriptor, "annotations": annotations}

    def sha256_of(path: Path) -> tuple[str, int]:
        content = path.read_bytes()
        return "sha256:" + hashlib.sha256(content).hexdigest(), len(content)

    lock_digest, lock_size = sha256_of(root / LOCK_FILENAME)
    layers = []
    if not ours:  # the lock is a file among the others
        layers.append(
            layer(
                root / LOCK_FILENAME, LOCK_FILENAME, modelpack.WEIGHT_CONFIG, lock_digest, lock_size
            )
        )
    for name, entry in sorted(lock.files.items()):
        media_type = FILE_MEDIA_TYPE if ours else modelpack.media_type_of(name)
        layers.append(layer(root / name, name, media_type, "sha256:" + entry.sha256, entry.size))
    files = len(lock.files)
    for path in signatures:
        digest, size = sha256_of(path)
        layers.append(
            layer(path, path.name, SIGNATURE_MEDIA_TYPE if ours else modelpack.DOC, digest, size)
        )
    if ours:
        config = {"mediaType": LOCK_MEDIA_TYPE, "digest": lock_digest, "size": lock_size}
        client.put_blob(root / LOCK_FILENAME, config)
    else:
        document = modelpack.config_document(lock, [entry["digest"] for entry in layers])
        encoded = canonical_json(document)
        config = {
            "mediaType": modelpack.CONFIG_MEDIA_TYPE,
            "digest": "sha256:" + hashlib.sha256(encoded).hexdigest(),
            "size": len(encoded),
        }
        client.put_bytes(encoded, config)
    annotations = {
        "org.opencontainers.image.title": lock.name,
        "org.opencontainers.image.version": lock.version,
        "org.opencontainers.image.created": lock.created,
        "dev.bundler.digest": lock.digest,
    }
    if lock.description:
        annotations["org.opencontainers.image.description"] = lock.description
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE if ours else modelpack.ARTIFACT_TYPE,
        "config": config,
        "layers": layers,
        "annotations": annotations,
    }
    body = canonical_json(manifest)
    client.put_manifest(body, tag)
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    where = Reference(ref.host, ref.repository, tag, None)
    return PushResult(
        reference=f"{where}@{digest}",
        tag=str(where),
        digest=digest,
        bundle_digest=lock.digest,
        format=format,
        file_count=files,
        total_size=lock.total_size,
        signed_by=next(iter(signatures.values()), None),
    )


def _descriptor_problem(layer: Any) -> str | None:
    if not isinstance(layer, dict):
        return "is not an object"
    if not (isinstance(layer.get("digest"), str) and re.fullmatch(DIGEST_PATTERN, layer["digest"])):
        return "has no sha256 digest"
    size = layer.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return "has no size"
    if not isinstance(layer.get("mediaType", ""), str):
        return "has a media type that is not a string"
    annotations = layer.get("annotations", {})
    if not isinstance(annotations, dict) or not all(
        isinstance(value, str) for value in annotations.values()
    ):
        return "has annotations that are not strings"
    return None


def _checked_manifest(body: bytes, ref: Reference) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    """(the lock's descriptor, [(bundle path, descriptor) of every other file]) from a manifest
    of either format, parsed strictly; every field this module uses is type-checked here."""
    from . import modelpack
    from .layout import SIGNATURE_FILENAMES
    from .signing import SIGNATURE_MAX_BYTES

    try:
        manifest = strict_json.loads(body)
    except (ValueError, RecursionError) as error:
        raise IntegrityError(
            f"the registry sent a manifest that is not valid JSON: {error}", path=str(ref)
        ) from None
    kind = manifest.get("artifactType") if isinstance(manifest, dict) else None
    if kind not in (ARTIFACT_TYPE, modelpack.ARTIFACT_TYPE):
        raise UsageError(
            f"{ref} is not a bundle (artifact type is neither {ARTIFACT_TYPE} nor "
            f"{modelpack.ARTIFACT_TYPE})"
        )
    ours = kind == ARTIFACT_TYPE
    config, layers = manifest.get("config"), manifest.get("layers")
    if not isinstance(config, dict) or not isinstance(layers, list):
        raise IntegrityError("the manifest has no config or layers", path=str(ref))
    for index, layer in enumerate([config, *layers]):
        problem = _descriptor_problem(layer)
        if problem is not None:
            where = "the config" if index == 0 else f"layer {index - 1}"
            raise IntegrityError(f"the manifest's {where} {problem}", path=str(ref))
    files: list[tuple[str, Any]] = []
    lock: dict[str, Any] | None = config if ours else None
    seen: set[str] = set()
    for layer in layers:
        title = layer.get("annotations", {}).get(TITLE) if ours else modelpack.layer_path(layer)
        media_type = layer.get("mediaType", "")
        reason = unsafe_path_reason(title) if isinstance(title, str) else "is missing"
        if reason is None and (title in seen or (ours and title == LOCK_FILENAME)):
            reason = "is listed twice or names the lock"
        signature = title in SIGNATURE_FILENAMES
        if reason is None and ours and (media_type == SIGNATURE_MEDIA_TYPE) != signature:
            reason = (
                f"and its media type disagree (only {' and '.join(SIGNATURE_FILENAMES)} are "
                "signatures)"
            )
        archived = media_type in modelpack.TAR_MEDIA_TYPES | modelpack.GZIP_MEDIA_TYPES
        if (
            reason is None
            and not ours
            and not (archived or media_type in modelpack.RAW_MEDIA_TYPES)
        ):
            reason = (
                f"is a {media_type!r} layer; bundler reads the ModelPack media types ending in "
                ".raw, .tar and .tar+gzip"
            )
        if reason is None and archived and (signature or title == LOCK_FILENAME):
            reason = "is an archive; the lock and signatures are single-file (.raw) layers"
        if reason is None and signature and layer["size"] > SIGNATURE_MAX_BYTES:
            limit = SIGNATURE_MAX_BYTES >> 20
            reason = f"claims {layer['size']} bytes, over the signature limit of {limit} MiB"
        if reason is not None:
            raise IntegrityError(f"a layer's path {title!r} {reason}", path=str(ref))
        seen.add(str(title))
        if title == LOCK_FILENAME:
            lock = layer
        else:
            files.append((str(title), layer))
    if lock is None:
        raise UsageError(
            f"{ref} is a ModelPack artifact without a {LOCK_FILENAME} layer, so not a bundle"
        )
    if lock["size"] > LOCK_MAX_BYTES:
        raise IntegrityError(
            f"the manifest's lock claims {lock['size']} bytes, over the lock's "
            f"limit of {LOCK_MAX_BYTES >> 20} MiB",
            path=str(ref),
        )
    return lock, files


def pull(
    reference: str,
    *,
    output: str | Path | None = None,
    force: bool = False,
    insecure: bool = False,
    trusted_keys: Any = None,
) -> PullResult:
    """The bundle at ``reference`` in the local cache (downloaded and verified if not there),
    and with ``output`` also copied there (``force`` replaces a bundle at ``output``); with
    ``trusted_keys``, its signature by one of them is required too. ``.path`` is its folder."""
    started = time.perf_counter()
    if output is None:
        path, downloaded = fetch(reference, insecure=insecure, trusted_keys=trusted_keys)
    else:
        path, downloaded = pull_to(
            reference, output, insecure=insecure, force=force, trusted_keys=trusted_keys
        )
    return PullResult(
        reference=reference,
        path=path,
        downloaded=downloaded,
        signature_checked=trusted_keys is not None,
        seconds=time.perf_counter() - started,
    )


def _signed_by(root: Path, trusted_keys: Any) -> Path:
    if trusted_keys is not None:
        from .signing import verify_signature

        verify_signature(root, trusted_keys)
    return root


def fetch(reference: str, *, insecure: bool = False, trusted_keys: Any = None) -> tuple[Path, bool]:
    """(the bundle's folder in the cache, whether it was downloaded now); with ``trusted_keys``
    the pulled signature must be valid and by one of them (checked before the cache takes it)."""
    from .atomic import remove_stale_temporaries

    ref = parse_reference(reference)
    cache = cache_root() / "sha256"
    if ref.digest:
        cached = cache / ref.digest.split(":", 1)[1]
        if (cached / LOCK_FILENAME).is_file():
            return _signed_by(cached, trusted_keys), False  # content-addressed: no request
    client = _Client(ref, insecure)
    body, digest = client.manifest(ref.digest or ref.tag or "latest")
    if ref.digest and digest != ref.digest:
        raise IntegrityError(
            f"the registry served a manifest whose digest is {digest}, not {ref.digest}",
            path=str(ref),
        )
    final = cache / digest.split(":", 1)[1]
    if (final / LOCK_FILENAME).is_file():
        return _signed_by(final, trusted_keys), False
    lock, files = _checked_manifest(body, ref)
    cache.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final, every_name=True)  # left beside it by killed pulls
    work = cache / f".{final.name}.bundler-tmp.{os.getpid()}.{secrets.token_hex(4)}"
    work.mkdir()
    try:
        client.fetch_blob(lock, work / LOCK_FILENAME)
        _fetch_files(client, files, work, str(ref))
        from .verify import require_intact

        require_intact(work, "the pulled bundle failed verification; refusing it", where=str(ref))
        try:
            _signed_by(work, trusted_keys)
        except SignatureError as error:  # named by the reference, not by the temporary folder
            raise SignatureError(error.message, path=str(ref)) from None
        try:
            os.rename(work, final)
        except OSError:
            if not (final / LOCK_FILENAME).is_file():  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final, True


def _fetch_files(client: _Client, files: list[tuple[str, Any]], work: Path, where: str) -> None:
    """Every layer but the lock into ``work``: raw layers as they are, tar layers unpacked within
    the bounds of the (already fetched) lock."""
    from . import modelpack

    sizes: dict[str, int] | None = None
    written: set[str] = set()
    for path, layer in files:
        media_type = layer.get("mediaType", "")
        if media_type in modelpack.RAW_MEDIA_TYPES or media_type not in (
            modelpack.TAR_MEDIA_TYPES | modelpack.GZIP_MEDIA_TYPES
        ):
            if path in written:
                raise IntegrityError(f"the layer {path!r} is sent twice; refusing it", path=where)
            target = work / path
            target.parent.mkdir(parents=True, exist_ok=True)
            client.fetch_blob(layer, target)
            written.add(path)
            continue
        from .layer_archive import unpack

        if sizes is None:
            sizes = _lock_sizes(work / LOCK_FILENAME, where)
        blob = work.parent / f"{work.name}.layer"
        try:
            client.fetch_blob(layer, blob)
            unpack(blob, media_type in modelpack.GZIP_MEDIA_TYPES, work, sizes, written, where)
        finally:
            blob.unlink(missing_ok=True)


def _lock_sizes(path: Path, where: str) -> dict[str, int]:
    """{path: size} of the pulled, not yet verified lock: only to bound what archives unpack."""
    try:
        files = strict_json.loads(path.read_bytes()).get("files")
        sizes = {str(name): int(entry["size"]) for name, entry in files.items()}
    except (ValueError, RecursionError, AttributeError, TypeError, KeyError) as error:
        raise IntegrityError(
            f"the pulled lock has no readable files table: {error}", path=where
        ) from None
    return sizes


def pull_to(
    reference: str,
    out: str | Path,
    *,
    insecure: bool = False,
    force: bool = False,
    trusted_keys: Any = None,
) -> tuple[Path, bool]:
    """Pull into the cache, then copy the bundle to ``out``, installed as a build installs it.

    Returns ``out`` and whether the bundle was downloaded now (else it came from the cache).
    """
    from .atomic import install, prepare_workdir

    cached, fetched = fetch(reference, insecure=insecure, trusted_keys=trusted_keys)
    target = Path(os.path.abspath(out))
    work = prepare_workdir(target, force)
    try:
        shutil.copytree(cached, work, dirs_exist_ok=True)
        install(work, target, force, what="pull")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Path(out), fetched
