"""``verify_bundle``: the checks of ``bundler.verify.checks``, then, with ``smoke=True``, the smoke
test.

The smoke test loads the bundle here, as ``load_bundle`` would with the same policy, and replays
its golden examples through the model it got (``golden.replay_examples``). It sits above both
``verify`` and ``load`` because it needs both: ``load_bundle`` verifies what it loads (with
``verify``'s checks, and through a pull or a signature check that verify in turn), so the module
that loads cannot be one that ``verify`` imports. ``check_bundle`` never imports TensorFlow;
``load`` and TensorFlow are imported here only when a smoke test runs, after every check passed.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from pathlib import Path
from typing import Any

from bundler.compat.environments import Environment
from bundler.compat.plan import Plan
from bundler.errors import BundleError, FallbackWarning
from bundler.files.hashing import ProgressFactory
from bundler.frameworks.installed import require_tensorflow
from bundler.problems import Problem
from bundler.types import Policy
from bundler.verify.checks import VerifyReport, check_bundle


def verify_bundle(
    path: str | Path,
    *,
    policy: Policy = "adapt",
    smoke: bool = False,
    env: Environment | str | Path | None = None,
    on_hashing: ProgressFactory | None = None,
    digest: str | None = None,
) -> VerifyReport:
    """Check a bundle's integrity, its lock, and whether it would load under ``policy``.

    ``smoke=True`` then loads it here and replays its golden examples (imports TensorFlow).
    ``env`` is a pip-freeze file describing a deploy target (default: this interpreter).
    ``on_hashing(total_bytes)`` may return a callback given the bytes hashed as they are.
    ``digest`` pins the bundle: any other (signed or not) is a ``pinned`` problem.
    Raises UsageError when ``path`` is not a bundle at all; every other finding is a Problem.
    """
    started = time.perf_counter()
    report = check_bundle(
        path, policy=policy, smoke=smoke, env=env, on_hashing=on_hashing, digest=digest
    )
    if not (smoke and report.ok):
        return report
    results, smoke_problems, plan = smoke_test(Path(report.bundle), policy)
    return dataclasses.replace(
        report,
        problems=tuple(smoke_problems),
        plan=plan if plan is not None and env is None else report.plan,  # a target's stays
        seconds=time.perf_counter() - started,
        smoke=tuple(results),
    )


def smoke_test(
    root: Path, policy: Policy
) -> tuple[list[dict[str, Any]], list[Problem], Plan | None]:
    """Load the bundle as load_bundle would (here, on this machine) and replay its examples.

    Returns the results, the problems, and the plan of what the load did: under ``fallback`` a
    Keras model that fails to load, or drifts, is served as the graph, and the report says so.
    """
    require_tensorflow("replaying the golden examples")
    from bundler.load.golden import replay_examples
    from bundler.load.loader import load_bundle

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FallbackWarning)
            loaded = load_bundle(root, policy=policy, verify=False)
    except BundleError as error:  # one problem a line: each detail is a line of its own
        head = Problem(".", "smoke", f"loading for the smoke test failed: {error.message}")
        return [], [head, *(Problem(".", "smoke", detail) for detail in error.details)], None
    if not loaded.lock.examples:
        return [], [], loaded.compatibility
    results, problems = replay_examples(loaded)
    return results, problems, loaded.compatibility
