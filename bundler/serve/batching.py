"""Dynamic batching: concurrent requests to one model run as one call, each answered on its own.

Why: a model call costs about the same for one row as for a few, because its time goes to reading
the weights (a 4M-parameter Dense stack reads 16 MB for every call) and to the framework's
per-call work, not to the rows. Concurrent calls from a thread pool make it worse: each reads the
weights again and they fight for the same cores. So each served model has **one worker thread**
and a queue; requests checked by ``serve_protocol`` wait in the queue while the worker is busy,
and when it is free, the waiting requests that can share a call go in one:

- rows are concatenated along the first axis, up to ``max_batch_size`` rows a call (a request
  with more rows than that runs alone, whole); only requests with the same inputs, dtypes and
  trailing shapes and read against the same loaded bundle share a call (a reload never mixes the
  old and the new model in one call);
- the outputs are split back by each request's rows; a model whose outputs do not follow the
  rows (a reduction over the batch) is run one request at a time from then on;
- a call that fails is run again one request at a time, so that one request's failure is its
  own and never its neighbours';
- under load the queue fills while the worker runs, which batches by itself; besides, while the
  model is under concurrent load (its last call answered several requests), the oldest request
  waits at most ``batch_timeout`` for as many requests as that call answered, so that calls stay
  full as clients come back one by one. A lone client never waits: its calls answer one
  request each;
- at most ``max_queue`` requests wait: one more is refused at once (``QueueFull``, HTTP 503 with
  ``Retry-After``) rather than queued behind seconds of work.

Answers equal each request's own unbatched prediction up to floating-point summation order
(within the golden examples' tolerances: ``tests/serve/test_batching.py``).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bundler.serve.settings import (
    DEFAULT_BATCH_TIMEOUT_MS,
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_QUEUE,
    RETRY_AFTER_SECONDS,
)

log = logging.getLogger("bundler.serve")


class QueueFull(Exception):
    """Too many requests already wait for this model: answered 503 with ``Retry-After``."""

    def __init__(self, model: str, waiting: int) -> None:
        super().__init__(
            f"model {model!r} has {waiting} requests waiting, its limit (--max-queue); "
            f"retry after {RETRY_AFTER_SECONDS} s"
        )
        self.reason = str(self)


Run = Callable[[Any, dict[str, Any]], dict[str, Any]]


@dataclass(eq=False)
class _Waiting:
    serving: Any  # the Serving the request was read against
    arrays: dict[str, Any]
    rows: int
    key: tuple[Any, ...]  # what must be equal to share a call
    future: asyncio.Future[dict[str, Any]]
    arrived: float = field(default=0.0)


def _key(serving: Any, arrays: dict[str, Any]) -> tuple[Any, ...]:
    return (
        id(serving),
        tuple((name, array.dtype.str, array.shape[1:]) for name, array in arrays.items()),
    )


class Batcher:
    """One model's queue and worker thread. ``submit`` from the event loop; ``run(serving,
    arrays)`` runs on the worker, one call at a time."""

    def __init__(
        self,
        name: str,
        run: Run,
        *,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        batch_timeout: float = DEFAULT_BATCH_TIMEOUT_MS / 1000,
        max_queue: int = DEFAULT_MAX_QUEUE,
    ) -> None:
        self.name = name
        self.run = run
        self.max_batch_size = max_batch_size
        self.batch_timeout = batch_timeout
        self.max_queue = max_queue
        self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="model")
        self.waiting: collections.deque[_Waiting] = collections.deque()
        self.busy = False
        self.timer: asyncio.TimerHandle | None = None
        self.unbatchable: weakref.WeakSet[Any] = weakref.WeakSet()
        self.last_call = 0  # requests the last call answered: > 1 means concurrent load
        self.calls = 0  # model calls made, and the requests they answered: for the tests and logs
        self.answered = 0

    async def submit(self, serving: Any, arrays: dict[str, Any]) -> dict[str, Any]:
        """The model's outputs for these checked arrays, by output name."""
        loop = asyncio.get_running_loop()
        if len(self.waiting) >= self.max_queue:
            raise QueueFull(self.name, len(self.waiting))
        rows = next(iter(arrays.values())).shape[0] if arrays else 1
        waiting = _Waiting(
            serving, arrays, rows, _key(serving, arrays), loop.create_future(), loop.time()
        )
        self.waiting.append(waiting)
        self._schedule(loop)
        return await waiting.future

    def _batchable(self, serving: Any) -> bool:
        return self.max_batch_size > 1 and serving.batchable and serving not in self.unbatchable

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        while self.waiting and self.waiting[0].future.done():  # its client went away
            self.waiting.popleft()
        if self.busy or not self.waiting:
            return
        head = self.waiting[0]
        if self.batch_timeout > 0 and self.last_call > 1 and self._batchable(head.serving):
            same = [w for w in self.waiting if w.key == head.key]
            rows = sum(w.rows for w in same)
            wait = head.arrived + self.batch_timeout - loop.time()
            if len(same) < self.last_call and rows < self.max_batch_size and wait > 0:
                if self.timer is None:
                    self.timer = loop.call_later(wait, self._timed_out, loop)
                return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._launch(loop)

    def _timed_out(self, loop: asyncio.AbstractEventLoop) -> None:
        self.timer = None
        self._schedule(loop)

    def _take(self) -> list[_Waiting]:
        head = self.waiting.popleft()
        batch = [head]
        if not self._batchable(head.serving) or head.rows >= self.max_batch_size:
            return batch
        rows = head.rows
        kept: collections.deque[_Waiting] = collections.deque()
        while self.waiting:
            waiting = self.waiting.popleft()
            if waiting.future.done():
                continue
            if waiting.key == head.key and rows + waiting.rows <= self.max_batch_size:
                batch.append(waiting)
                rows += waiting.rows
            else:
                kept.append(waiting)
        self.waiting = kept
        return batch

    def _launch(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self._take()
        self.last_call = len(batch)
        self.busy = True
        done = loop.run_in_executor(self.executor, self._call, batch)
        done.add_done_callback(lambda finished: self._finished(loop, batch, finished))

    def _finished(
        self, loop: asyncio.AbstractEventLoop, batch: list[_Waiting], finished: asyncio.Future[Any]
    ) -> None:
        self.busy = False
        error = finished.exception()
        answers = [error] * len(batch) if error is not None else finished.result()
        for waiting, answer in zip(batch, answers, strict=True):
            if waiting.future.done():
                continue
            if isinstance(answer, BaseException):
                waiting.future.set_exception(answer)
            else:
                waiting.future.set_result(answer)
        self._schedule(loop)

    # -- on the worker thread ---------------------------------------------------------------------

    def _one(self, waiting: _Waiting) -> dict[str, Any] | BaseException:
        self.calls += 1
        self.answered += 1
        try:
            return self.run(waiting.serving, waiting.arrays)
        except Exception as error:
            return error

    def _call(self, batch: list[_Waiting]) -> list[dict[str, Any] | BaseException]:
        if len(batch) == 1:
            return [self._one(batch[0])]
        import numpy as np

        serving = batch[0].serving
        names = list(batch[0].arrays)
        merged = {name: np.concatenate([w.arrays[name] for w in batch]) for name in names}
        total = sum(w.rows for w in batch)
        try:
            outputs = self.run(serving, merged)
        except Exception:
            outputs = None  # one request's failure must stay its own: each runs alone
        if outputs is not None:
            if all(o.ndim and o.shape[0] == total for o in outputs.values()):
                self.calls += 1
                self.answered += len(batch)
                answers: list[dict[str, Any] | BaseException] = []
                start = 0
                for waiting in batch:
                    end = start + waiting.rows
                    answers.append({name: o[start:end] for name, o in outputs.items()})
                    start = end
                return answers
            log.warning(
                "model %s: its outputs do not follow the rows of its inputs; it is run one "
                "request at a time",
                self.name,
            )
            self.unbatchable.add(serving)
        return [self._one(waiting) for waiting in batch]

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
