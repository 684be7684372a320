"""Rehearsal rows: what proving the load at build costs, the build with it vs without it.

- ``rehearsal_cli_build``: ``bundle build`` in a fresh process (as CI runs it) vs the same command
  with ``--no-rehearse``: the rehearsal's interpreter starts with the command, so its TensorFlow
  import overlaps the command's own.
- ``rehearsal_api_build``: ``build_bundle(rehearse=True)`` vs ``rehearse=False`` in a process that
  has TensorFlow imported already (a notebook, a training script): only the export overlaps the
  rehearsal's start-up here, so this is the costlier case.

Runs alternate ABBA (with, without, without, with, ...), so a machine whose load drifts weighs on
both alike; each row is the median of its runs, and notes the medians of how long the build
waited for the rehearsal once its lock was written (what the overlap did not hide) and of how
long the rehearsal's interpreter took to start.
``python -m benchmarks --only rehearsal`` runs these rows alone (default size 25M).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TARGETS = {
    "rehearsal_cli_build": (1.3, "<= 1.3x bundle build --no-rehearse"),
}

Run = Callable[[], dict[str, Any]]


def _cpu() -> float:
    """CPU seconds of this process and of the children it waited for."""
    usages = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(usage.ru_utime + usage.ru_stime for usage in usages)


def _abba(with_it: Run, without: Run, rounds: int) -> tuple[list[float], list[float], str]:
    """Times of ``rounds`` runs of each, taken ABBA, and what the rehearsed runs reported (with
    the CPU time each run took: unlike wall time, it hardly depends on what else the machine
    runs)."""
    timed: tuple[list[float], list[float]] = ([], [])
    cpu: tuple[list[float], list[float]] = ([], [])
    reports: list[dict[str, Any]] = []
    for index in range(rounds):
        order = [(0, with_it), (1, without)] if index % 2 == 0 else [(1, without), (0, with_it)]
        for slot, action in order:
            os.sync()
            started, used = time.perf_counter(), _cpu()
            report = action()
            timed[slot].append(time.perf_counter() - started)
            cpu[slot].append(_cpu() - used)
            if report["rehearsed"]:
                reports.append(report)
    median = statistics.median
    waited = median(r["waited"] for r in reports)
    startup = median(r["startup"] for r in reports)
    said = (
        f"{rounds} runs each, ABBA; the build waited {waited:.2f} s for the rehearsal, which took "
        f"{startup:.2f} s to start; CPU {median(cpu[0]):.1f} s vs {median(cpu[1]):.1f} s "
        f"(medians; load average {os.getloadavg()[0]:.1f})"
    )
    return timed[0], timed[1], said


def rehearsal_rows(
    params: int,
    repeat: int,
    work: Path,
    write_workspace: Callable[[Path, int], Path],
    row: Callable[..., dict[str, Any]],
) -> list[dict[str, Any]]:
    """The rehearsal's rows at ``params`` parameters; ``repeat`` rounds of each (at least 2)."""
    import bundler

    folder = work / f"rehearsal-{params}"
    manifest = write_workspace(folder, params)
    out = folder / "bundle"
    rounds = max(repeat, 2)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    here = Path(bundler.__file__).resolve().parent.parent  # this checkout's bundler
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(here), env.get("PYTHONPATH")]))

    def command(*extra: str) -> Run:
        argv = [sys.executable, "-m", "bundler", "build", str(manifest), "-o", str(out), "--json"]

        def run() -> dict[str, Any]:
            shutil.rmtree(out, ignore_errors=True)
            done = subprocess.run(
                [*argv, *extra], env=env, capture_output=True, text=True, check=False
            )
            if done.returncode != 0:
                raise RuntimeError(f"bundle build failed: {done.stderr[-2000:]}")
            return json.loads(done.stdout)["rehearsal"]  # type: ignore[no-any-return]

        return run

    def in_process(rehearse: bool) -> Run:
        def run() -> dict[str, Any]:
            shutil.rmtree(out, ignore_errors=True)
            return bundler.build_bundle(manifest, out, rehearse=rehearse).rehearsal.to_json()

        return run

    median = statistics.median
    command("--no-rehearse")()  # untimed: bytecode written, page cache warm
    with_it, without, said = _abba(command(), command("--no-rehearse"), rounds)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
    model = f"{params / 1e6:g}M params, bundle {size:.0f} MB"
    rows = [row("rehearsal_cli_build", median(with_it), median(without), note=f"{model}; {said}")]
    sys.path.insert(0, str(folder / "src"))
    try:
        in_process(False)()  # untimed: TensorFlow and the component imported here
        with_it, without, said = _abba(in_process(True), in_process(False), rounds)
    finally:
        sys.path.remove(str(folder / "src"))
        sys.modules.pop("bench_layers", None)
    note = f"{model}; {said}"
    rows.append(row("rehearsal_api_build", median(with_it), median(without), note=note))
    shutil.rmtree(folder, ignore_errors=True)
    return rows
