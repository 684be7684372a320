"""The benchmark script runs and writes its results; speed itself is reported, never asserted."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT, cli_env, installed, require_module

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


def test_the_serve_benchmark_against_a_plain_kserve_model_runs(tmp_path: Path) -> None:
    """benchmarks/serve_peer.py end to end, as small as it goes: both servers answer, the ABBA
    turns are pooled into ratios, and the reload check sees one refusal and one reload."""
    require_module("kserve")  # the serve extra: skipped (failed in CI) without it
    out = tmp_path / "serve-peer.json"
    options = ["--sizes", "10k", "--clients", "2", "--seconds", "0.5", "--out", str(out)]
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.serve_peer", *options],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "bundle serve (A) vs plain KServe model (B)" in result.stdout
    entry = json.loads(out.read_text())["sizes"]["10k"]
    (row,) = entry["rows"]
    for server in ("bundle_serve", "plain_kserve"):
        assert set(row[server]["statuses"]) == {"200"} and row[server]["errors"] == 0, row
    assert math.isfinite(row["throughput_ratio"]) and math.isfinite(row["p99_ratio"])
    reload = entry["reload_under_load"]
    assert reload["verdicts"] == ["reload of bench-10000 refused", "reloaded bench-10000"]
    assert set(reload["statuses"]) == {"200"} and reload["errors"] == [], reload
