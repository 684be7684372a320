"""A problem with a bundle: what every check reports, by the file it is about.

Its own module so that every check (integrity in ``bundler.verify.checks``, the graph scan, the
archive check) can report one without importing the others.
"""

from __future__ import annotations

from dataclasses import dataclass

from bundler.types import ProblemKind

# problems about whether intact files load here; every other kind means a damaged bundle
LOAD_KINDS = frozenset({"config", "incompatible", "modified", "smoke"})


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a bundle, by the file it is about."""

    path: str
    kind: ProblemKind
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "kind": self.kind, "message": self.message}
