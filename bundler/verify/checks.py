"""Verification: is this bundle intact, and would it load here (or on a target)?

Four layers, each reported in full rather than stopping at the first problem:

1. the lock: readable, bounded in size, of a known format, valid against ``lock.schema.json``,
   every path in it safe, and its digest equal to the digest of its own files table
   (``bundler.verify.lock_reader``, which every reader of a lock goes through);
2. the files: every listed file present as a plain file with the listed size and sha256; nothing
   extra, no symlinks, FIFOs or devices; nothing outside the bundle is ever opened. A hard link is
   judged by its bytes like any file: a ``cp -al`` backup must not fail the original. The
   SavedModel's graph (``graph_scan``) and model.keras's members and HDF5 weights
   (``keras_archive``) are checked as ``load_bundle`` would check them;
3. the config scan that ``load_bundle`` runs before Keras sees ``config.json`` (every object from
   Keras or a component the lock names), so a bundle load refuses is never reported loadable;
4. the plan: what ``load_bundle`` with the same policy would do with the installed versions and
   the installed code (source identity, ``bundler.compat.components``; the modules the lock records
   as defining the model's objects, found as import would find them,
   ``bundler.compat.module_finder``), or with those of a target environment
   (``bundler.compat.environments``), and so which path it takes (the Keras model, or the SavedModel
   graph).

Hashing bounds how fast verify can be, and the checks are kept small beside it: this thread makes
the plan and checks model.keras's archive and config, then reads ``saved_model.pb`` once, hashes it
and hands its bytes to the graph scan, and only then do the workers hash the large files on every
core.
Run beside the workers, that Python would slow their hashing by more than it takes alone (they
wait for the GIL between chunks): benchmarks/README.md has the measurements.

None of this imports TensorFlow or Keras: component versions come from distribution metadata or
source text, framework versions from distribution metadata. Only ``smoke=True`` runs the model, and
so imports TensorFlow, after everything else passed: that step loads the bundle as ``load_bundle``
would, and ``load_bundle`` verifies with this module, so it sits a layer above
(``bundler.load.smoke``, whose ``verify_bundle`` is ``check_bundle`` plus the replay, and whose
report then carries the plan of what that load did). A component whose code changed under the same
version (``modified``) loads only once its golden examples replay: without ``smoke`` verify cannot
promise that, and says so as a problem rather than guess.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bundler.compat.environments import Environment, StaticEnvironment, TargetEnvironment
from bundler.compat.plan import POLICIES, Plan, make_plan
from bundler.errors import BundleError, IntegrityError, LoadError, UnsafeBundleError, UsageError
from bundler.files.hashing import Progress, ProgressFactory, check_digests, metered
from bundler.lock.layout import LOCK_FILENAME, SIGNATURE_FILENAMES
from bundler.lock.model import FileEntry, Lock
from bundler.lock.paths import UnsafeFileError, open_bundle_file, walk_tree
from bundler.problems import LOAD_KINDS, Problem
from bundler.scans.config import check_config_modules, check_recorded_objects, read_keras_config
from bundler.scans.graph import GraphScan
from bundler.scans.keras_archive import archive_problems
from bundler.types import Policy
from bundler.verify.lock_reader import bundle_root, pin_problem, pinned_digest, read_lock


@dataclass(frozen=True)
class VerifyReport:
    """What ``verify_bundle`` found: ``ok``, every ``problems`` at once, and the load ``plan``."""

    bundle: str
    problems: tuple[Problem, ...]
    lock: Lock | None = field(default=None, repr=False)
    plan: Plan | None = None
    files_checked: int = 0
    bytes_hashed: int = 0
    seconds: float = 0.0
    smoke: tuple[dict[str, Any], ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def digest(self) -> str | None:
        return self.lock.digest if self.lock else None

    @property
    def integrity_ok(self) -> bool:
        return all(p.kind in LOAD_KINDS for p in self.problems)

    def to_json(self) -> dict[str, Any]:
        return {
            "bundle": self.bundle,
            "ok": self.ok,
            "name": self.lock.name if self.lock else None,
            "version": self.lock.version if self.lock else None,
            "digest": self.digest,
            "rehearsal": (
                self.lock.rehearsal.to_dict() if self.lock and self.lock.rehearsal else None
            ),
            "problems": [problem.to_json() for problem in self.problems],
            "plan": self.plan.to_json() if self.plan else None,
            "files_checked": self.files_checked,
            "bytes_hashed": self.bytes_hashed,
            "seconds": round(self.seconds, 4),
            "smoke": list(self.smoke),
        }


def check_tree(
    root: Path, files: Mapping[str, FileEntry], *, defer: Collection[str] = ()
) -> tuple[list[Problem], list[str]]:
    """Compare the bundle folder with the lock's files table by walking it, reading nothing:
    (problems, the listed files present at their size, to be hashed). Files named in ``defer``
    that have shard digests are left out of those: see ``check_files``."""
    problems: list[Problem] = []
    try:
        entries = walk_tree(root)
    except OSError as error:
        return [Problem(".", "unreadable", f"cannot list the bundle: {error.strerror}")], []
    found = {entry.path: entry for entry in entries}
    for entry in entries:
        if entry.path in (LOCK_FILENAME, *SIGNATURE_FILENAMES):
            continue  # the files that describe the bundle are not in its files table
        if entry.kind == "dir":
            if entry.path in files:
                problems.append(Problem(entry.path, "type", "is a folder, the lock lists a file"))
            continue
        if entry.kind != "file":
            problems.append(
                Problem(entry.path, entry.kind, f"is a {entry.kind}; bundles hold plain files only")
            )
        elif entry.path not in files:
            problems.append(Problem(entry.path, "extra", "is not listed in the lock (extra file)"))
    to_hash = []
    for name, expected in files.items():
        listed = found.get(name)
        if listed is None:
            problems.append(Problem(name, "missing", "is missing"))
        elif listed.kind == "file":  # hard links too: their bytes are what is judged
            if listed.size != expected.size:
                problems.append(
                    Problem(name, "size", f"has {listed.size} bytes, the lock says {expected.size}")
                )
            elif name not in defer or expected.shards is None:
                to_hash.append(name)
    return problems, to_hash


def check_files(
    root: Path,
    files: Mapping[str, FileEntry],
    progress: Progress | None = None,
    *,
    defer: Collection[str] = (),
    consumers: Mapping[str, Callable[[bytes], None]] | None = None,
) -> tuple[list[Problem], int]:
    """Compare the bundle folder with the lock's files table; returns (problems, bytes hashed).

    Files named in ``defer`` that have shard digests are walked and sized but not hashed: the
    caller reads them through ``file_window.VerifiedFile``, which checks each shard as it is read.
    Files named in ``consumers`` are hashed first, on this thread, and handed to them
    (``bundler.files.hashing.check_digests``).
    """
    problems, to_hash = check_tree(root, files, defer=defer)
    verdicts = check_digests(
        root,
        {name: files[name] for name in to_hash},
        progress=progress,
        consumers=consumers,
    )
    total = 0
    for name in to_hash:
        verdict = verdicts[name]
        if verdict is None:
            total += files[name].size
        else:
            problems.append(Problem(name, *verdict))
    problems.sort(key=lambda p: p.path)
    return problems, total


def check_artifacts(lock: Lock) -> list[Problem]:
    """A problem for each artifact or example file the lock names but its files table lacks."""
    files = lock.files
    artifacts = lock.artifacts
    problems = []
    if artifacts.keras not in files:
        problems.append(
            Problem(artifacts.keras, "missing", "the Keras model is not in the files table")
        )
    if f"{artifacts.saved_model}/saved_model.pb" not in files:
        problems.append(
            Problem(artifacts.saved_model, "missing", "the SavedModel is not in the files table")
        )
    for example in lock.examples:
        for key, path in (("inputs", example.inputs), ("outputs", example.outputs)):
            if path not in files:
                problems.append(
                    Problem(
                        path, "missing", f"example {example.name!r} {key} not in the files table"
                    )
                )
    return problems


def _archive_problems(root: Path, lock: Lock) -> list[Problem]:
    """The archive check of model.keras (``keras_archive``), run while the files hash: only on a
    plain file there (anything else is the files check's problem, and makes this one moot)."""
    try:
        plain = stat.S_ISREG(os.lstat(root / lock.artifacts.keras).st_mode)
    except OSError:
        return []
    return archive_problems(root, lock.artifacts.keras, lock.files, ()) if plain else []


def changed_while_read(root: Path, relative: str, entry: FileEntry) -> Problem | None:
    """A ``changed`` problem when the file no longer matches its lock entry: what a reader that
    failed midway checks, so that a file rewritten while it was read gets that verdict rather
    than the parser's complaint about bytes the lock never vouched for."""
    verdict = check_digests(root, {relative: entry})[relative]
    if verdict is None:
        return None
    return Problem(relative, "changed", f"changed while it was being read ({verdict[1]})")


def _read_and_scan_config(root: Path, lock: Lock) -> None:
    """One read of model.keras's config and the loader's scan of it (``bundler.scans.config``):
    raises what either finds."""
    keras_file = lock.artifacts.keras
    with open_bundle_file(root, keras_file, lock.files[keras_file].size) as stream:
        config = read_keras_config(stream, keras_file)
    check_config_modules(config, [c.module for c in lock.components], keras_file)
    check_recorded_objects(config, lock.components, keras_file)


# Reads of model.keras's config that fail with the file matching its lock each time, before the
# failure is the config's own: a writer rewriting the file under verify (a fault or an attack on
# the check) can make one failed read look like the file's damage; each further read must line
# up with the rewrite again, and each costs a read and a hash only on the way to a FAILED verdict.
CONFIG_READS = 3


def _scan_config(root: Path, lock: Lock) -> list[Problem]:
    """The loader's config scan, run here without TensorFlow (see ``bundler.scans.config``).

    A read or a scan that fails is a ``config`` problem only when the file still matches its lock
    after every one of ``CONFIG_READS`` tries; a file that changed in between is ``changed``."""
    keras_file = lock.artifacts.keras
    entry = lock.files[keras_file]
    failure: BundleError | None = None
    for _ in range(CONFIG_READS):
        try:
            _read_and_scan_config(root, lock)
        except UnsafeFileError as error:  # swapped for a link, a FIFO, another size since the walk
            return [Problem(error.relative, error.kind, error.reason)]
        except (UnsafeBundleError, LoadError) as error:
            if (changed := changed_while_read(root, keras_file, entry)) is not None:
                return [changed]
            failure = error
            continue
        if failure is None:
            return []
        why = "changed while it was being read (it matches the lock again)"
        return [Problem(keras_file, "changed", why)]
    assert failure is not None
    return [Problem(keras_file, "config", failure.message)]


def _config_passes(root: Path, lock: Lock) -> bool:
    """The loader's config scan on one read of model.keras made before it is hashed, with the
    archive already checked safe to open: True when it passes. That verdict counts only once
    the hash vouches for the file; a scan that fails, or cannot run, is left to ``_scan_config``
    after the hashing, which decides (and rereads)."""
    try:
        _read_and_scan_config(root, lock)
    except (BundleError, UnsafeFileError, OSError, ValueError, KeyError):
        return False
    return True


def check_bundle(
    path: str | Path,
    *,
    policy: Policy = "adapt",
    smoke: bool = False,
    env: Environment | str | Path | None = None,
    on_hashing: ProgressFactory | None = None,
    digest: str | None = None,
) -> VerifyReport:
    """Check a bundle's integrity, its lock, and whether it would load under ``policy``.

    Everything ``verify_bundle`` does but run the model: ``smoke=True`` says the golden examples
    are replayed next (``bundler.load.smoke``), so a ``modified`` component is left to that replay.

    ``env`` is a pip-freeze file describing a deploy target (default: this interpreter).
    ``on_hashing(total_bytes)`` may return a callback given the bytes hashed as they are.
    ``digest`` pins the bundle: any other (signed or not) is a ``pinned`` problem.
    Raises UsageError when ``path`` is not a bundle at all; every other finding is a Problem.
    """
    digest = pinned_digest(digest)
    if policy not in POLICIES:
        raise UsageError(
            f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}", field="policy"
        )
    started = time.perf_counter()
    root = bundle_root(path)
    environment: Environment
    if env is None:
        environment = StaticEnvironment()
    elif isinstance(env, (str, Path)):
        environment = TargetEnvironment(env)
    else:
        environment = env
    lock, problems = read_lock(root)
    if (pinned := pin_problem(lock, digest)) is not None:
        problems.append(pinned)
    if lock is None:
        return VerifyReport(str(root), tuple(problems), seconds=time.perf_counter() - started)
    problems += check_artifacts(lock)
    # before the hashing, not beside it (see the module docstring): the plan (it reads the lock
    # and what is installed, not the bundle's files), the archive check of model.keras (its zip
    # directory and HDF5 metadata), then, in an archive safe to open, the config scan; each
    # counts only where the files check allows
    plan = make_plan(lock, policy, environment)
    archived = _archive_problems(root, lock)
    config_passed = not archived and _config_passes(root, lock)
    graph = GraphScan(root, lock)  # run on saved_model.pb's bytes once they are hashed
    with metered(on_hashing, lock.total_size) as meter:
        file_problems, hashed = check_files(root, lock.files, meter, consumers=graph.consumers())
    problems += file_problems
    problems += graph.problems(problems)
    if not any(problem.path == lock.artifacts.keras for problem in problems):
        problems += archived  # model.keras is the file the lock lists: its verdict holds
    if not problems and not config_passed:  # the file the lock lists; read again, to decide
        problems += _scan_config(root, lock)
    if not plan.ok:
        problems.append(Problem(".", "incompatible", plan.refusal()))
    elif plan.replay and not smoke and policy != "fallback":
        changed = ", ".join(
            f"{c.name} {c.installed}" for c in plan.checks if c.status == "modified"
        )
        problems.append(
            Problem(
                ".",
                "modified",
                f"the code of {changed} differs from the build's under the same version; "
                "load_bundle loads it only if the golden examples replay within tolerance: "
                "run 'bundle verify --smoke' to replay them here",
            )
        )
    return VerifyReport(
        str(root),
        tuple(problems),
        lock,
        plan,
        files_checked=len(lock.files),
        bytes_hashed=hashed,
        seconds=time.perf_counter() - started,
    )


def require_intact(
    root: Path,
    refusal: str,
    error: type[BundleError] = IntegrityError,
    where: str | Path | None = None,
    on_hashing: ProgressFactory | None = None,
) -> VerifyReport:
    """Verify ``root`` before acting on it (sign, push, cache): ``error(refusal)`` if not intact.
    ``on_hashing`` is ``check_bundle``'s: progress, for a push or pull on a terminal."""
    report = check_bundle(root, on_hashing=on_hashing)
    if not report.integrity_ok:
        raise error(refusal, path=where or root, details=[str(p) for p in report.problems])
    return report
