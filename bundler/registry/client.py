"""The registry client: the few OCI distribution calls push and pull make, bounded and checked.

A registry is someone on the path, so nothing it sends is believed before it is checked, and
nothing it sends is read without a bound: every answer the client reads whole (a manifest, a token,
an error body) is read in chunks and refused past 4 MiB, *while* it streams, before any parsing;
blobs stream to disk, stop at their descriptor's size and must match its sha256. Credentials come
from ``BUNDLER_REGISTRY_USERNAME``/``BUNDLER_REGISTRY_PASSWORD`` or docker's ``config.json``.

The protocol is spoken through ``oras`` (``pip install 'keras-bundler[oci]'``), imported only here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bundler.errors import IntegrityError, RegistryError, UsageError
from bundler.frameworks.installed import install_hint
from bundler.registry.reference import Reference

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
MAX_MANIFEST_BYTES = 4 << 20
MAX_ANSWER_BYTES = 4 << 20  # anything else read whole: tokens, error bodies, upload answers
CHUNKED_ABOVE = 32 << 20  # larger blobs go up in PATCH chunks: memory stays flat
CHUNK_BYTES = 16 << 20


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


def _bounded_session(session: Any, where: str, sent: Callable[[int], None]) -> None:
    """Every answer of ``session`` that its caller reads whole (oras's token requests and error
    bodies too) is read with a cap; streamed answers are left to their caller, who bounds them.
    ``sent`` is told the bytes of each blob upload request once it is sent (oras reads the files
    and sends them, whole or in chunks, through this session)."""
    from requests.adapters import HTTPAdapter

    class Bounded(HTTPAdapter):
        def send(self, request: Any, stream: bool = False, **kwargs: Any) -> Any:  # type: ignore[override]
            response = super().send(request, stream=True, **kwargs)
            if "/blobs/uploads/" in str(request.url) and isinstance(request.body, bytes):
                sent(len(request.body))
            if not stream:
                response._content = _read_capped(response, MAX_ANSWER_BYTES, "an answer", where)
            return response

    for prefix in ("http://", "https://"):
        session.mount(prefix, Bounded())


class RegistryClient:
    """The few registry calls we need, through oras's session, auth and retries.

    ``meter``, when set, is told the bytes of blobs as they are uploaded or downloaded.
    """

    meter: Callable[[int], None] | None = None

    def __init__(self, ref: Reference, insecure: bool) -> None:
        try:
            import oras.container
            import oras.provider
        except ImportError:
            raise UsageError(
                f"registry support needs the oras package: {install_hint('oci')}"
            ) from None
        plain_http = insecure or ref.local
        self.registry = oras.provider.Registry(hostname=ref.host, insecure=plain_http)
        _bounded_session(self.registry.session, str(ref), self._count)
        found = credentials(ref.host)
        if found is not None:
            self.registry.auth.set_basic_auth(*found)
        self.container = oras.container.Container(
            f"{ref.repository}:{ref.tag or 'latest'}", registry=ref.host
        )
        self.ref = ref
        self.prefix = "http" if plain_http else "https"

    def _count(self, size: int) -> None:
        if self.meter is not None:
            self.meter(size)

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
                    self._count(len(chunk))
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
