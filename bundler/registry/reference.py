"""Registry references, ``oci://HOST[:PORT]/REPOSITORY[:TAG][@sha256:...]``: telling and reading.

Apart from the registry client so that code which only needs to tell a reference from a folder
(``load_bundle``, ``diff_bundles``) does not import the client, the push and the pull with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeGuard

from bundler.errors import UsageError

LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")

_REFERENCE = re.compile(
    r"^oci://(?P<host>[A-Za-z0-9.-]+(?::\d+)?|\[[0-9a-fA-F:]+\](?::\d+)?)"
    r"/(?P<repo>[a-z0-9]+(?:[._/-][a-z0-9]+)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)


@dataclass(frozen=True)
class Reference:
    """A parsed ``oci://`` reference; ``local`` registries (loopback) are spoken to over HTTP."""

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
