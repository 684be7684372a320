"""The hashing threads: every task once, in order of listing, and a failure stops them all."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bundler.files.hashing import check_digests, hash_file, run_all
from bundler.lock.model import FileEntry


def test_every_task_runs_once_and_results_keep_the_tasks_order() -> None:
    ran: list[int] = []
    threads: set[str] = set()

    def task(number: int) -> int:
        threads.add(threading.current_thread().name)
        time.sleep(0.001)
        ran.append(number)
        return number * number

    tasks: list[Callable[[], object]] = [functools.partial(task, n) for n in range(40)]
    results = run_all(tasks, workers=2)
    assert results == [n * n for n in range(40)]
    assert sorted(ran) == list(range(40))
    assert threading.current_thread().name in threads  # the caller hashes too, not only waits
    assert len(threads) == 2


def test_an_os_error_is_a_result_and_any_other_error_stops_every_thread() -> None:
    def missing() -> object:
        raise FileNotFoundError(2, "No such file or directory")

    first, *_ = run_all([missing, lambda: 1], workers=2)
    assert isinstance(first, FileNotFoundError)

    started: list[int] = []

    def task(number: int) -> int:
        started.append(number)
        if number == 0:
            raise RuntimeError("a bug, not a file")
        time.sleep(0.01)
        return number

    with pytest.raises(RuntimeError, match="a bug, not a file"):
        run_all([functools.partial(task, n) for n in range(50)], workers=2)
    assert len(started) < 5  # the other thread finished the task it was on, and took no more


def test_a_consumer_gets_the_bytes_it_was_hashed_from_only_when_they_match(
    tmp_path: Path,
) -> None:
    """saved_model.pb is read once: hashed, and its bytes handed to the graph scan only when they
    are the ones the lock lists."""
    (tmp_path / "a.pb").write_bytes(b"graph")
    (tmp_path / "b.pb").write_bytes(b"other")
    digest = hash_file(tmp_path / "a.pb")
    expected = {
        "a.pb": FileEntry(size=digest.size, sha256=digest.sha256),
        "b.pb": FileEntry(size=5, sha256="0" * 64),
    }
    handed: dict[str, bytes] = {}
    consumers = {name: functools.partial(handed.__setitem__, name) for name in expected}
    verdicts = check_digests(tmp_path, expected, consumers=consumers)
    assert verdicts["a.pb"] is None and verdicts["b.pb"] is not None
    assert handed == {"a.pb": b"graph"}
