"""Bundles in OCI registries: push, pull into a content-addressed cache, load by reference.

A bundle is pushed as a CNCF ModelPack artifact (the default; its layout is
``bundler.registry.modelpack``) or, with ``format="bundler"``, as an OCI image manifest of our own
artifact type (``bundler.registry.artifact``). Both are one layer per file, not archives: a layer's
digest *is* the file's sha256 from the lock, so push sends the files as they are, pull checks every
blob against its descriptor while it streams, and there is nothing to unpack (so no archive path
tricks). A signed bundle's signature files travel as layers too, so ``load_bundle("oci://...",
trusted_keys=...)`` checks the publisher's signature on what it pulled. Pull reads both formats, so
artifacts pushed before ModelPack keep working.

This module is the public face; the work is done, in the order data flows, by:

- ``bundler.registry.reference``: ``oci://`` references, told from folders and parsed;
- ``bundler.registry.client``: the registry client (oras's session and auth, credentials, every
  answer read with a bound, every blob checked while it streams);
- ``bundler.registry.artifact``: bundler's media types, and a manifest of either format read
  strictly;
- ``bundler.registry.push``: ``push``, verified bundle to layers and manifest;
- ``bundler.registry.pull``: ``pull``, ``fetch`` and ``pull_to``, into the content-addressed cache.
"""

from __future__ import annotations

from bundler.errors import RegistryError
from bundler.registry.artifact import ARTIFACT_TYPE
from bundler.registry.client import CHUNKED_ABOVE, credentials
from bundler.registry.pull import cache_root, fetch, pull, pull_to
from bundler.registry.push import PUSH_FORMATS, push
from bundler.registry.reference import Reference, is_reference, parse_reference

__all__ = [
    "ARTIFACT_TYPE",
    "CHUNKED_ABOVE",
    "PUSH_FORMATS",
    "Reference",
    "RegistryError",
    "cache_root",
    "credentials",
    "fetch",
    "is_reference",
    "parse_reference",
    "pull",
    "pull_to",
    "push",
]
