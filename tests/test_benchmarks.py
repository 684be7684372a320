"""The benchmark script runs and writes its results; speed itself is reported, never asserted."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT, cli_env, installed

METRICS = {
    "build",
    "load_verify_false",
    "load_verify_true",
    "verify_vs_sha256sum",
    "verify_vs_hashlib_1_thread",
    "verify_throughput",
    "startup_vs_pass",
    "import_bundler_vs_pass",
    "identity_check",
    "load_modified_replay",
    "reproducible_build",
    "diff_identical_vs_pass",
    "diff_all_weights_changed",
}
SERVE_METRICS = {  # when the serve extra is installed
    "serve_requests_per_s_1_client",
    "serve_p50_latency_1_client",
    "serve_p99_latency_1_client",
    "serve_requests_per_s_8_clients",
    "serve_p50_latency_8_clients",
    "serve_p99_latency_8_clients",
    "serve_reload_p99_latency",
    "serve_reload_max_latency",
}


def test_quick_benchmark_prints_ratios_and_writes_json(tmp_path: Path) -> None:
    serving = installed("kserve")  # the serve rows need KServe
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ratio" in result.stdout and "results: " in result.stdout
    (written,) = tmp_path.glob("*-quick.json")
    document = json.loads(written.read_text())
    rows = {row["metric"]: row for row in document["rows"]}
    assert set(rows) >= METRICS, sorted(rows)
    if serving:
        assert set(rows) >= SERVE_METRICS, sorted(rows)
    for row in rows.values():
        assert row["bundler"] > 0 and row["baseline"] > 0 and math.isfinite(row["ratio"]), row
    assert document["machine"]["cpus"] >= 1
