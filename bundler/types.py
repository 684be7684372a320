"""The small vocabularies bundler speaks, spelled once.

Policies, load modes, check statuses and problem kinds are plain strings in ``--json`` output and
in the Python API; these ``Literal`` types name every value each can take, so a type checker
catches ``policy="strcit"`` and a reader finds the whole list in one place. Nothing here is
imported at run time by anything heavy: the module holds type aliases only.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["CheckKind", "EntryKind", "Mode", "Policy", "ProblemKind", "Status"]

Policy = Literal["strict", "adapt", "fallback"]
"""How ``load_bundle`` and ``bundle verify`` treat components that are not an exact or compatible
fit: ``strict`` refuses, ``adapt`` (the default) also accepts registered adapters, ``fallback``
additionally serves the SavedModel graph when the Keras path is refused."""

Mode = Literal["keras", "graph", "refused"]
"""What a load plan does: load the Keras model, serve the SavedModel graph, or refuse."""

Status = Literal["exact", "modified", "compatible", "adapted", "incompatible", "missing"]
"""How one installed component or framework relates to what the bundle pinned."""

CheckKind = Literal["component", "framework", "op_library"]
"""What a compatibility check is about: a declared component, Keras/TensorFlow, or a library of
TensorFlow ops the graph needs (tensorflow-text)."""

EntryKind = Literal["file", "dir", "symlink", "fifo", "device", "socket", "other"]
"""What one entry found under a bundle folder is; every kind but a file or a folder is refused."""

ProblemKind = Literal[
    # the lock itself
    "lock",  # missing, unreadable, not JSON, unknown format
    "schema",  # does not validate against the lock's JSON Schema
    "digest",  # the digest does not match the lock it is in
    "pinned",  # another bundle than the digest the caller pinned
    "signature",  # not signed by a trusted key (missing, invalid, another key's, stale)
    "unsafe",  # a path, a Keras archive or a graph that loading would refuse
    # the files against the lock
    "missing",
    "extra",
    "changed",
    "size",
    "shards",  # the shard digests of a large file do not fit its size
    "type",  # a folder where the lock lists a file
    "symlink",
    "fifo",
    "device",
    "socket",
    "other",  # any other kind of file system entry
    "unreadable",
    # whether intact files load here
    "config",  # the model's config names a module no component covers
    "incompatible",
    "modified",
    "smoke",  # a golden example failed or drifted on replay
]
"""What one ``Problem`` of a ``VerifyReport`` is about; the ``kind`` field of ``--json`` output."""
