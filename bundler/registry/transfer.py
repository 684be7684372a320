"""What a push or a pull did: the values ``bundler.registry.api.push`` and
``bundler.registry.api.pull`` return.

Apart from the registry client so that a reader (and ``bundle push``/``pull``, which only render
them) finds the result of a transfer without the protocol around it. ``to_json()`` is the
``--json`` document of each command, so the command line and the Python API give the same facts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bundler.files.hashing import Progress

PushFormat = Literal["modelpack", "bundler"]
"""The artifact a push writes: a CNCF ModelPack artifact, or bundler's own (the lock as config)."""

OnStage = Callable[[str, int], Progress | None]
"""``on_stage(what, total_bytes)``, told as each stage of a push or pull begins (``verifying``,
``uploading``; ``downloading``, ``verifying in the cache``); it may return a meter, told the bytes
of that stage as they are done. A stage ends when the next begins or the call returns: a meter
with a ``close()`` may be closed then, or left to the caller (``bundle push`` and ``pull`` close
it)."""


@dataclass(frozen=True, kw_only=True)
class PushResult:
    """A bundle pushed to a registry: where it went and the manifest digest to deploy by.

    ``reference`` is the tag with that digest (``oci://HOST/REPO:TAG@sha256:...``), what a deploy
    should pull, because a tag can move; ``tag`` the tag alone. ``digest`` is the registry
    manifest's digest, ``bundle_digest`` the bundle's own (the one ``bundle build`` printed).
    ``signed_by`` is the key id of the signature pushed along, or None for an unsigned bundle.
    """

    reference: str
    tag: str
    digest: str
    bundle_digest: str
    format: PushFormat
    file_count: int
    total_size: int
    signed_by: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``bundle push --json`` document."""
        return {
            "reference": self.reference,
            "tag": self.tag,
            "digest": self.digest,
            "bundle_digest": self.bundle_digest,
            "format": self.format,
            "files": self.file_count,
            "bytes": self.total_size,
            "signed_by": self.signed_by,
        }


@dataclass(frozen=True, kw_only=True)
class PullResult:
    """A bundle pulled from a registry: where it is now, verified, and how it got there.

    ``path`` is the bundle's folder: in the content-addressed cache, or the ``output`` folder it
    was copied to. ``downloaded`` is False when the cache already held it (no blob was fetched).
    ``signature_checked`` is True when trusted keys were given: the pulled signature by one of
    them was checked and is valid (a pull with an invalid one raises instead of returning).
    """

    reference: str
    path: Path
    downloaded: bool
    signature_checked: bool = False
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The ``bundle pull --json`` document."""
        return {
            "reference": self.reference,
            "path": str(self.path),
            "downloaded": self.downloaded,
            "signature": "valid" if self.signature_checked else None,
            "seconds": round(self.seconds, 3),
        }
