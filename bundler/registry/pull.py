"""Pulling a bundle into the content-addressed cache, verified there, and out of it.

Pulls land in ``$BUNDLER_CACHE`` (default ``$XDG_CACHE_HOME/bundler`` or ``~/.cache/bundler``) at
``sha256/<manifest digest>/``: downloaded into a temporary folder beside it, verified as a bundle,
then renamed into place, so concurrent pulls of one digest never leave a partial entry (the loser
discards its copy). The temporary folders are named as a build names its own, so a pull killed
midway leaves one that the next pull removes once its process is gone. A reference by digest
that is in the cache makes no request at all; a tag is resolved with one manifest request.

Every blob is checked against its descriptor while it streams, and nothing is unpacked but the
ModelPack ``.tar`` layers other tools send (within the bounds of the lock, pulled first).
"""

from __future__ import annotations

import functools
import os
import shutil
import time
from pathlib import Path
from typing import Any

from bundler import strict_json
from bundler.errors import IntegrityError, SignatureError
from bundler.files.atomic import temporary_beside
from bundler.lock.layout import LOCK_FILENAME
from bundler.registry.artifact import checked_manifest
from bundler.registry.client import RegistryClient
from bundler.registry.reference import parse_reference
from bundler.registry.transfer import OnStage, PullResult


def cache_root() -> Path:
    if os.environ.get("BUNDLER_CACHE"):
        return Path(os.environ["BUNDLER_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bundler"


def pull(
    reference: str,
    *,
    output: str | Path | None = None,
    force: bool = False,
    insecure: bool = False,
    trusted_keys: Any = None,
    on_stage: OnStage | None = None,
) -> PullResult:
    """The bundle at ``reference`` in the local cache (downloaded and verified if not there),
    and with ``output`` also copied there (``force`` replaces a bundle at ``output``); with
    ``trusted_keys``, its signature by one of them is required too. ``.path`` is its folder.
    ``on_stage`` is told of ``downloading`` and ``verifying in the cache``, with their bytes."""
    started = time.perf_counter()
    if output is None:
        path, downloaded = fetch(
            reference, insecure=insecure, trusted_keys=trusted_keys, on_stage=on_stage
        )
    else:
        path, downloaded = pull_to(
            reference,
            output,
            insecure=insecure,
            force=force,
            trusted_keys=trusted_keys,
            on_stage=on_stage,
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
        from bundler.trust.signing import verify_signature

        verify_signature(root, trusted_keys)
    return root


def fetch(
    reference: str,
    *,
    insecure: bool = False,
    trusted_keys: Any = None,
    on_stage: OnStage | None = None,
) -> tuple[Path, bool]:
    """(the bundle's folder in the cache, whether it was downloaded now); with ``trusted_keys``
    the pulled signature must be valid and by one of them (checked before the cache takes it)."""
    from bundler.files.atomic import remove_stale_temporaries

    ref = parse_reference(reference)
    cache = cache_root() / "sha256"
    if ref.digest:
        cached = cache / ref.digest.split(":", 1)[1]
        if (cached / LOCK_FILENAME).is_file():
            return _signed_by(cached, trusted_keys), False  # content-addressed: no request
    client = RegistryClient(ref, insecure)
    body, digest = client.manifest(ref.digest or ref.tag or "latest")
    if ref.digest and digest != ref.digest:
        raise IntegrityError(
            f"the registry served a manifest whose digest is {digest}, not {ref.digest}",
            path=str(ref),
        )
    final = cache / digest.split(":", 1)[1]
    if (final / LOCK_FILENAME).is_file():
        return _signed_by(final, trusted_keys), False
    lock, files = checked_manifest(body, ref)
    cache.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final, every_name=True)  # left beside it by killed pulls
    work = temporary_beside(final)
    work.mkdir()
    hashing = None
    if on_stage is not None:  # the sizes the manifest claims (checked ints): shown, not trusted
        client.meter = on_stage("downloading", lock["size"] + sum(d["size"] for _, d in files))
        hashing = functools.partial(on_stage, "verifying in the cache")
    try:
        client.fetch_blob(lock, work / LOCK_FILENAME)
        _fetch_files(client, files, work, str(ref), final)
        from bundler.verify.checks import require_intact

        refusal = "the pulled bundle failed verification; refusing it"
        require_intact(work, refusal, where=str(ref), on_hashing=hashing)
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


def _fetch_files(
    client: RegistryClient, files: list[tuple[str, Any]], work: Path, where: str, final: Path
) -> None:
    """Every layer but the lock into ``work``: raw layers as they are, tar layers unpacked within
    the bounds of the (already fetched) lock, each downloaded beside ``final`` first into a
    temporary named as ``atomic.temporary_beside`` names them (a killed pull's is swept)."""
    from bundler.registry import modelpack
    from bundler.registry.layer_archive import layer_clash, unpack

    sizes: dict[str, int] | None = None
    written: set[str] = set()
    for path, layer in files:
        media_type = layer.get("mediaType", "")
        if media_type in modelpack.RAW_MEDIA_TYPES or media_type not in (
            modelpack.TAR_MEDIA_TYPES | modelpack.GZIP_MEDIA_TYPES
        ):
            if path in written:
                raise IntegrityError(f"the layer {path!r} is sent twice; refusing it", path=where)
            clash = layer_clash(path, written)  # with a tar layer's files
            if clash is not None:
                raise IntegrityError(f"a layer's path {path!r} {clash}; refusing it", path=where)
            target = work / path
            target.parent.mkdir(parents=True, exist_ok=True)
            client.fetch_blob(layer, target)
            written.add(path)
            continue
        if sizes is None:
            sizes = _lock_sizes(work / LOCK_FILENAME, where)
        blob = temporary_beside(final.with_name(f"{final.name}.layer"))
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
    on_stage: OnStage | None = None,
) -> tuple[Path, bool]:
    """Pull into the cache, then copy the bundle to ``out``, installed as a build installs it.

    Returns ``out`` and whether the bundle was downloaded now (else it came from the cache).
    """
    from bundler.files.atomic import install, prepare_workdir

    cached, fetched = fetch(
        reference, insecure=insecure, trusted_keys=trusted_keys, on_stage=on_stage
    )
    target = Path(os.path.abspath(out))
    work = prepare_workdir(target, force)
    try:
        shutil.copytree(cached, work, dirs_exist_ok=True)
        install(work, target, force, what="pull")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Path(out), fetched
