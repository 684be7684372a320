"""The integrity half of a verified load: model.keras checked up front, the rest while it builds.

``bundle verify`` hashes every file before it answers; a service loading a bundle would wait as
long again before Keras starts. ``check_integrity`` reads and checks the lock and the folder as
verify does (``verify.check_files``) but hashes up front only ``model.keras``, and only when it has
no shard digests: every other file is left to the ``DeferredChecks`` it returns, checked while,
and before, it is used. A sharded ``model.keras`` is read through ``file_window.VerifiedFile``, each
shard checked before it is parsed; its weights' shards, then the SavedModel and the examples
(which the Keras path never reads), are hashed on another core while the model is built. The
loader waits for the weights before it reads them and for everything before it returns a model or
serves the graph: a mismatch is an IntegrityError, the model never returned. With
``verify=False`` only the lock is read and checked (and the digest pin, when given).
"""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path

from bundler.errors import IntegrityError
from bundler.files.hashing import check_digests
from bundler.files.window import ShardMismatch, VerifiedFile
from bundler.lock.model import LOCK_FILENAME, FileEntry, Lock
from bundler.problems import Problem
from bundler.types import ProblemKind
from bundler.verify.checks import check_artifacts, check_files
from bundler.verify.lock_reader import pin_problem, read_lock


def check_integrity(
    root: Path, verify: bool, digest: str | None = None
) -> tuple[Lock, DeferredChecks | None]:
    """The validated lock, every file checked against it when ``verify``. Only model.keras is
    checked now, and only when it has no shard digests; the rest is left to the returned
    ``DeferredChecks``, checked while (and before) it is used: the Keras path never reads the other
    files, so they are hashed on another core while the model is built."""
    lock, problems = read_lock(root)
    if (pinned := pin_problem(lock, digest)) is not None:
        raise IntegrityError(pinned.message, path=root / LOCK_FILENAME)
    deferred = None
    if lock is not None:
        problems += check_artifacts(lock)
        if verify:
            files = lock.files
            keras = lock.artifacts.keras
            later = set() if problems else {n for n in files if n != keras}
            if keras in files and files[keras].shards is not None and not problems:
                later.add(keras)
            problems += check_files(root, files, defer=later)[0]
            if later and not problems:
                reader = None
                try:
                    if keras in later:
                        entry = files[keras]
                        shards = entry.shards
                        assert shards is not None
                        reader = VerifiedFile(
                            root / keras, entry.size, shards.size, list(shards.sha256)
                        )
                except (OSError, ValueError) as error:
                    problems.append(Problem(keras, "unreadable", f"cannot be read: {error}"))
                else:
                    others = {name: files[name] for name in later if name != keras}
                    deferred = DeferredChecks(root, keras, reader, others)
                    deferred.prefetch()
    if problems:
        raise _failed(root, problems)
    assert lock is not None
    return lock, deferred


def _failed(root: Path, problems: list[Problem]) -> IntegrityError:
    return IntegrityError(
        f"the bundle failed verification ({len(problems)} problem"
        f"{'s' if len(problems) > 1 else ''}); refusing to load it",
        path=root,
        details=[str(p) for p in problems],
    )


class DeferredChecks:
    """The files a verified load checks while it works rather than before.

    A sharded model.keras is read through ``reader``, which checks each shard before its bytes are
    parsed; ``start`` then hashes, on a thread, the shards nobody read (the weights) and, after
    them, every other file (the SavedModel and the examples, which the Keras path never reads). The
    loader waits for the first before it reads the weights (``weights``) and for all before it
    returns a model or serves the graph (``settle``); any mismatch is an IntegrityError.
    """

    def __init__(
        self,
        root: Path,
        keras: str,
        reader: VerifiedFile | None,
        others: dict[str, FileEntry],
    ) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.root, self.keras, self.reader, self.others = root, keras, reader, others
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="bundler-verify")
        self._weights: Future[None] | None = None
        self._rest: Future[dict[str, tuple[ProblemKind, str] | None]] | None = None

    def prefetch(self) -> None:
        """Verify, meanwhile, the shards a loader reads first: the zip's directory and config at
        the end of model.keras, its first header at the start."""
        if self.reader is not None:
            last = len(self.reader.unchecked()) - 1
            self._pool.submit(self.reader.check, sorted({0, last}), 2)

    def start(self) -> None:
        """Start hashing the shards nobody read yet, then every other file, on the thread."""
        if self._weights is None:
            check = self.reader.check_rest if self.reader is not None else (lambda: None)
            self._weights = self._pool.submit(check)
            self._rest = self._pool.submit(check_digests, self.root, self.others)

    def failed(self) -> bool:
        """Whether a shard read through ``reader`` already failed its digest."""
        return self.reader is not None and self.reader.failure is not None

    def weights(self) -> None:
        """Wait until every shard of model.keras is checked; an IntegrityError if one is not."""
        self.start()
        assert self._weights is not None
        try:
            self._weights.result()
        except (ShardMismatch, OSError) as error:
            why = (self.reader.failure if self.reader else None) or f"cannot be read: {error}"
            raise _failed(self.root, [Problem(self.keras, "changed", why)]) from None

    def settle(self) -> None:
        """Wait until every file is checked; an IntegrityError naming each one that is not."""
        self.weights()
        assert self._rest is not None
        verdicts = self._rest.result()
        problems = [Problem(name, *v) for name, v in sorted(verdicts.items()) if v is not None]
        if problems:
            raise _failed(self.root, problems)

    def close(self) -> None:
        """Stop the thread (what it has not started is cancelled) and close the reader."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self.reader is not None:
            self.reader.close()
