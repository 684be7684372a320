"""What is inside a bundle, at a glance: the report ``bundle inspect`` renders.

Inspecting reads the lock and plans the load for the versions installed here, hashing no file
and importing nothing from the bundle, so it answers "what is this?" for a bundle that ``verify``
would refuse too: a lock whose digest disagrees with its files table is still shown, with that
problem beside it. Beside it too go what a look at the folder finds without reading a file's
bytes (a link, a FIFO, a file missing, extra or of another size: ``verify.check_tree``) and what
the checks ``load_bundle`` runs before Keras opens ``model.keras`` refuse (``keras_archive``:
HDF5 weights keeping data in a file outside, links, shape and zip bombs), read as verify reads
it: never outside the bundle, never blocking. Apart from verification, whose job is a verdict,
not a description.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bundler.compat.environments import StaticEnvironment
from bundler.compat.plan import Plan, make_plan
from bundler.errors import UsageError
from bundler.lock.layout import LOCK_FILENAME
from bundler.lock.model import Lock
from bundler.problems import Problem
from bundler.scans.keras_archive import archive_problems
from bundler.verify.checks import check_tree
from bundler.verify.lock_reader import bundle_root, read_lock


@dataclass(frozen=True, kw_only=True)
class InspectReport:
    """A bundle described from its lock: ``lock`` (every field), the load ``plan`` here under
    policy ``adapt``, and the ``problems`` found that did not stop the lock being read (a digest
    that disagrees with the files table, an odd entry in the folder, an archive load refuses)."""

    bundle: Path
    lock: Lock
    plan: Plan
    problems: tuple[Problem, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The ``bundle inspect --json`` document: the lock's fields, the plan, the problems."""
        lock = self.lock
        return {
            "bundle": str(self.bundle),
            "name": lock.name,
            "version": lock.version,
            "description": lock.description,
            "format": lock.format,
            "digest": lock.digest,
            "digest_covers": lock.digest_covers,
            "created": lock.created,
            "rehearsal": None if lock.rehearsal is None else lock.rehearsal.to_dict(),
            "environment": lock.environment.to_dict(),
            "components": [component.to_dict() for component in lock.components],
            "plan": self.plan.to_json(),
            "metadata": lock.metadata,
            "examples": [example.to_dict() for example in lock.examples],
            "files": lock.files_table(),
            "lock_problems": [problem.to_json() for problem in self.problems],
        }


def inspect_bundle(path: str | Path) -> InspectReport:
    """Describe the bundle at ``path`` from its lock, with the load plan for this machine.

    Raises UsageError (exit 2 on the command line) when ``path`` is not a bundle or its lock
    cannot be read at all; use ``verify_bundle`` for whether the files match the lock.
    """
    root = bundle_root(path)
    lock, problems = read_lock(root)
    if lock is None:
        raise UsageError(
            "cannot be inspected: " + "; ".join(problem.message for problem in problems),
            path=root / LOCK_FILENAME,
        )
    found, _ = check_tree(root, lock.files)
    problems += sorted(found, key=lambda problem: problem.path)
    problems += archive_problems(root, lock.artifacts.keras, lock.files, problems)
    plan = make_plan(lock, "adapt", StaticEnvironment())
    return InspectReport(bundle=root, lock=lock, plan=plan, problems=tuple(problems))
