"""Dynamic batching, in process: real bundles, real Keras models, a real event loop and worker.

To make "requests that wait together" deterministic, a first request (the blocker) holds the
worker until the others are queued; ``run`` is the served model's own, wrapped only to hold that
first call and to record what each call received.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from bundler import Bundle, load_bundle

pytest.importorskip("kserve", reason="the serve extra is not installed")

from bundler.serve.batching import Batcher, QueueFull
from bundler.serve.model import Serving, load_for_serving

Calls = list[dict[str, tuple[int, ...]]]


def recording(
    calls: Calls, gate: threading.Event | None = None
) -> Callable[[Any, dict[str, Any]], dict[str, Any]]:
    def run(serving: Serving, arrays: dict[str, Any]) -> dict[str, Any]:
        if gate is not None:
            gate.wait(60)  # the blocker's call holds the worker until the others wait
        calls.append({name: array.shape for name, array in arrays.items()})
        return serving.run(arrays)

    return run


def submit_together(
    batcher: Batcher,
    serving: Serving,
    requests: list[dict[str, Any]],
    gate: threading.Event,
    blocker: dict[str, Any],
) -> list[Any]:
    """Submit ``blocker`` (its call holds the worker), then ``requests``; then let go. Returns
    the answers to ``requests`` (an exception where one failed)."""

    async def main() -> list[Any]:
        held = asyncio.ensure_future(batcher.submit(serving, blocker))
        await asyncio.sleep(0.05)
        submitted = [asyncio.ensure_future(batcher.submit(serving, r)) for r in requests]
        await asyncio.sleep(0.05)
        gate.set()
        await held
        return list(await asyncio.gather(*submitted, return_exceptions=True))

    try:
        return asyncio.run(main())
    finally:
        gate.set()
        batcher.close()


def assert_close(answer: Any, alone: Any, serving: Serving) -> None:
    """Equal within the bundle's golden tolerances: a batch sums in another order."""
    (example,) = serving.loaded.lock.examples
    np.testing.assert_allclose(answer, alone, rtol=example.rtol, atol=example.atol)


@pytest.fixture(scope="module")
def sequential(built: dict[str, Bundle]) -> Serving:
    return load_for_serving(built["sequential"].path, "adapt")


def test_concurrent_requests_share_one_call_and_each_gets_its_own_answer(
    sequential: Serving,
) -> None:
    rng = np.random.default_rng(0)
    requests = [
        {"features": rng.normal(size=(rows, 8)).astype("float32")} for rows in (1, 3, 1, 5, 2)
    ]
    calls: Calls = []
    gate = threading.Event()
    batcher = Batcher("m", recording(calls, gate), max_batch_size=32)
    answers = submit_together(batcher, sequential, requests, gate, requests[0])
    assert calls == [{"features": (1, 8)}, {"features": (12, 8)}]
    for arrays, answer in zip(requests, answers, strict=True):
        alone = sequential.loaded.predict(arrays["features"])
        assert_close(answer["output_0"], alone, sequential)


def test_a_call_takes_at_most_max_batch_size_rows(sequential: Serving) -> None:
    rng = np.random.default_rng(1)
    sizes = (1, 3, 1, 5, 2, 1, 4, 1, 9)
    requests = [{"features": rng.normal(size=(rows, 8)).astype("float32")} for rows in sizes]
    calls: Calls = []
    gate = threading.Event()
    batcher = Batcher("m", recording(calls, gate), max_batch_size=8)
    answers = submit_together(batcher, sequential, requests, gate, requests[0])
    rows = [call["features"][0] for call in calls[1:]]
    # the oldest first, then whoever fits: 1+3+1+2+1 (5 would pass 8), then 5+1, then 4, and
    # the 9-row request alone, whole
    assert rows == [8, 6, 4, 9]
    for arrays, answer in zip(requests, answers, strict=True):
        alone = sequential.loaded.predict(arrays["features"])
        assert_close(answer["output_0"], alone, sequential)


def test_a_model_with_several_inputs_and_outputs_is_batched_by_name(
    serve_bundles: dict[str, Bundle],
) -> None:
    served = load_for_serving(serve_bundles["multi-io"].path, "adapt")
    rng = np.random.default_rng(2)
    requests = [
        {
            "a": rng.normal(size=(rows, 2)).astype("float32"),
            "b": rng.normal(size=(rows, 3)).astype("float32"),
        }
        for rows in (2, 1, 4)
    ]
    calls: Calls = []
    gate = threading.Event()
    batcher = Batcher("m", recording(calls, gate), max_batch_size=32)
    answers = submit_together(batcher, served, requests, gate, requests[0])
    assert calls[1:] == [{"a": (7, 2), "b": (7, 3)}]
    loaded = load_bundle(serve_bundles["multi-io"].path)
    for arrays, answer in zip(requests, answers, strict=True):
        alone = loaded.predict(arrays)
        assert sorted(answer) == ["probs", "score"]
        for name in ("probs", "score"):
            assert_close(answer[name], alone[name], served)


def test_requests_of_different_trailing_shapes_never_share_a_call(
    serve_bundles: dict[str, Bundle],
) -> None:
    served = load_for_serving(serve_bundles["sequence"].path, "adapt")
    assert [spec.shape for spec in served.inputs] == [(-1, -1, 3)]
    rng = np.random.default_rng(3)
    steps = (5, 7, 5, 7, 2)
    requests = [{"steps": rng.normal(size=(1, n, 3)).astype("float32")} for n in steps]
    calls: Calls = []
    gate = threading.Event()
    batcher = Batcher("m", recording(calls, gate), max_batch_size=32)
    answers = submit_together(batcher, served, requests, gate, requests[-1])
    assert calls[1:] == [{"steps": (2, 5, 3)}, {"steps": (2, 7, 3)}, {"steps": (1, 2, 3)}]
    for arrays, answer in zip(requests, answers, strict=True):
        alone = served.loaded.predict(arrays["steps"])
        assert_close(answer["output_0"], alone, served)


def test_one_requests_failure_is_its_own(sequential: Serving) -> None:
    """A call that fails is run again one request at a time: the neighbours are answered."""
    calls: Calls = []
    gate = threading.Event()
    record = recording(calls, gate)

    def fails_on_999(serving: Serving, arrays: dict[str, Any]) -> dict[str, Any]:
        if (arrays["features"] == 999).any():  # as a custom layer refusing a value would
            raise ValueError("999 is not a feature value")
        return record(serving, arrays)

    good = np.ones((1, 8), "float32")
    bad = np.full((1, 8), 999, "float32")
    batcher = Batcher("m", fails_on_999, max_batch_size=32)
    requests = [{"features": good}, {"features": bad}, {"features": good}]
    answers = submit_together(batcher, sequential, requests, gate, requests[0])
    assert isinstance(answers[1], ValueError)
    assert calls == [{"features": (1, 8)}] * 3  # the blocker; the batch of 3 failed; two alone
    expected = sequential.loaded.predict(good)
    for answer in (answers[0], answers[2]):
        assert_close(answer["output_0"], expected, sequential)


def test_a_full_queue_refuses_at_once(sequential: Serving) -> None:
    """One request runs (held), ``max_queue`` wait, the next is refused with QueueFull."""
    release = threading.Event()

    def held(serving: Serving, arrays: dict[str, Any]) -> dict[str, Any]:
        release.wait(60)
        return serving.run(arrays)

    batcher = Batcher("m", held, max_batch_size=1, max_queue=2)
    row = {"features": np.ones((1, 8), "float32")}

    async def main() -> list[Any]:
        running = [asyncio.ensure_future(batcher.submit(sequential, row)) for _ in range(3)]
        await asyncio.sleep(0.1)  # the first is on the worker, two wait
        with pytest.raises(QueueFull) as refused:
            await batcher.submit(sequential, row)
        release.set()
        assert str(refused.value) == (
            "model 'm' has 2 requests waiting, its limit (--max-queue); retry after 1 s"
        )
        return list(await asyncio.gather(*running))

    try:
        answers = asyncio.run(main())
    finally:
        release.set()
        batcher.close()
    assert len(answers) == 3 and all("output_0" in answer for answer in answers)


def test_a_lone_client_never_waits_and_concurrent_ones_wait_for_each_other(
    sequential: Serving,
) -> None:
    """``batch_timeout`` applies only while the last call answered several requests, and only
    until as many wait again."""
    calls: Calls = []
    batcher = Batcher("m", recording(calls), max_batch_size=32, batch_timeout=2.0)
    row = {"features": np.ones((1, 8), "float32")}

    async def main() -> tuple[float, float]:
        began = time.monotonic()
        for _ in range(3):
            await batcher.submit(sequential, row)
        lone = time.monotonic() - began  # three calls of one request: no wait at all
        batcher.last_call = 3  # as after a call that answered three concurrent requests
        began = time.monotonic()
        staggered = []
        for _ in range(3):  # three clients coming back one after the other
            staggered.append(asyncio.ensure_future(batcher.submit(sequential, row)))
            await asyncio.sleep(0.05)
        await asyncio.gather(*staggered)
        return lone, time.monotonic() - began

    try:
        lone, together = asyncio.run(main())
    finally:
        batcher.close()
    assert [call["features"][0] for call in calls] == [1, 1, 1, 3]
    assert lone < 1.0 and together < 1.5, (lone, together)  # neither waited the full 2 s
