"""Faults and concurrency: OUT is always absent, the old complete bundle or the new one.

Builds are real subprocesses (only a process can be killed, run out of disk or race another);
each costs a TensorFlow start, so they run in parallel where the story allows.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bundler import Bundle, build_bundle, verify_bundle
from bundler.errors import BuildError
from bundler.files.atomic import TEMP_NAME, remove_stale_temporaries

from ..conftest import EXAMPLES, ROOT, cli_env, service_env

SEQUENTIAL = str(EXAMPLES / "sequential" / "manifest.yaml")


def _popen(*args: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env=kwargs.pop("env", cli_env()),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".bundler-" in p.name)


def _limit_file_size(limit: int) -> Any:
    def preexec() -> None:
        # a disk that fills up: a write past `limit` fails with EFBIG. SIGXFSZ would kill the
        # process instead, so it is ignored, as a full disk (ENOSPC) raises rather than kills.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


LONG_GRAPH = """
import keras

__version__ = "1.0.0"


@keras.saving.register_keras_serializable(package="faults")
class Deep(keras.layers.Layer):
    \"\"\"One layer, a long graph: saved_model.pb (160 KB) outgrows model.keras (12 KB).\"\"\"

    def call(self, inputs):
        for _ in range(400):
            inputs = keras.ops.tanh(inputs) * 0.5
        return inputs


def build():
    inputs = keras.Input(shape=(4,), name="x")
    return keras.Model(inputs, Deep(name="deep")(inputs))
"""


def _long_graph_manifest(folder: Path) -> str:
    (folder / "src").mkdir()
    (folder / "src" / "long_graph.py").write_text(LONG_GRAPH)
    (folder / "manifest.yaml").write_text(
        "apiVersion: bundler/v1\nname: long-graph\nversion: 1.0.0\n"
        "model: {factory: 'long_graph:build'}\npaths: [src]\n"
        "components: [{module: long_graph, version: 1.0.0}]\nexamples: []\n"
    )
    return str(folder / "manifest.yaml")


@pytest.mark.parametrize("where", ["while saving model.keras", "while exporting saved_model"])
def test_disk_full_mid_build_fails_clearly_and_leaves_nothing(tmp_path: Path, where: str) -> None:
    # Guards the build's failure path: every write error becomes one BuildError line (exit 1),
    # and the temporary folder is removed, whichever writer (Keras, TensorFlow, us) hit it.
    if where == "while saving model.keras":  # model.keras is 26 KB, the largest file
        manifest, limit = SEQUENTIAL, 8192
    else:  # model.keras fits, saved_model.pb does not
        work = tmp_path / "work"
        work.mkdir()
        manifest, limit = _long_graph_manifest(work), 60_000
    out = tmp_path / "out"
    process = _popen("-m", "bundler", "build", manifest, "-o", str(out), "--no-rehearse",
                     preexec_fn=_limit_file_size(limit))  # fmt: skip
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1, stderr
    assert "File too large" in stderr or "too large" in stderr.lower(), stderr
    stage = "exporting the SavedModel" if "export" in where else "Keras could not save"
    assert stage in stderr, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert not out.exists() and _leftovers(tmp_path) == []


@pytest.fixture()
def read_only_folder() -> Iterator[Path]:
    """A folder this process cannot write, even as root (privileges dropped while it is used)."""
    base = Path(tempfile.mkdtemp(prefix="bundler-ro-"))
    base.chmod(0o755)
    folder = base / "ro"
    folder.mkdir(mode=0o555)
    folder.chmod(0o555)
    try:
        yield folder
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_read_only_output_folder_is_a_clear_build_error(read_only_folder: Path) -> None:
    # Guards build_bundle's conversion: the raw PermissionError used to escape (an "internal
    # error" on the command line).
    dropped = os.geteuid() == 0
    if dropped:
        os.seteuid(65534)  # nobody: root ignores file modes
    try:
        with pytest.raises(BuildError, match="Permission denied"):
            build_bundle(SEQUENTIAL, read_only_folder / "out")
    finally:
        if dropped:
            os.seteuid(0)
    assert list(read_only_folder.iterdir()) == []


KILLED_FORCE_BUILD = """
import os, signal, sys
import bundler.files.atomic as atomic
import bundler.build.pipeline as build

point, manifest, out = sys.argv[1:]
if point == "before-swap":
    flush = atomic._sync_tree
    def hook(root):
        flush(root)
        os.kill(os.getpid(), signal.SIGKILL)
    atomic._sync_tree = hook
else:
    exchange = atomic._exchange
    def hook(first, second):
        swapped = exchange(first, second)
        os.kill(os.getpid(), signal.SIGKILL)
    atomic._exchange = hook
build.build_bundle(manifest, out, force=True, rehearse=False)
"""


def test_force_rebuild_killed_around_the_swap_leaves_a_complete_bundle(
    built: dict[str, Bundle], tmp_path: Path
) -> None:
    """SIGKILL just before and just after the atomic swap of a --force rebuild."""
    old_digest = built["sequential"].digest
    runs = {}
    for point in ("before-swap", "after-swap"):
        out = tmp_path / point / "out"
        shutil.copytree(built["sequential"].path, out)
        runs[point] = (out, _popen("-c", KILLED_FORCE_BUILD, point, SEQUENTIAL, str(out)))
    digests = {}
    for point, (out, process) in runs.items():
        process.communicate(timeout=300)
        assert process.returncode == -signal.SIGKILL
        report = verify_bundle(out)
        assert report.ok, report.problems
        digests[point] = report.digest
        left = _leftovers(out.parent)
        assert len(left) == 1 and TEMP_NAME.match(left[0]), left  # recognisably named
        assert remove_stale_temporaries(out)  # ... and cleaned by the next build of OUT
        assert _leftovers(out.parent) == []
    assert digests["before-swap"] == old_digest  # killed before: the old bundle
    assert verify_bundle(runs["after-swap"][0]).ok  # killed after: the new one, complete


def test_concurrent_builds_to_one_output_never_corrupt_it(tmp_path: Path) -> None:
    out = tmp_path / "out"
    commands = [["build", SEQUENTIAL, "-o", str(out), "--no-rehearse"]] * 2
    commands.append(["build", SEQUENTIAL, "-o", str(out), "--force", "--no-rehearse"])
    processes = [_popen("-m", "bundler", *command) for command in commands]
    outcomes = []
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        outcomes.append(process.returncode)
        assert "Traceback" not in stderr and "internal error" not in stderr, stderr
        if process.returncode:
            assert process.returncode in (1, 2)
            assert len(stderr.strip().splitlines()) == 1, stderr
            assert "already exists" in stderr or "another build" in stderr, stderr
    assert 0 in outcomes, outcomes
    assert verify_bundle(out).ok
    assert _leftovers(tmp_path) == []


LOADER = """
import sys, threading, numpy as np, bundler
path = sys.argv[1]
results = []
def load():
    try:
        loaded = bundler.load_bundle(path)
        results.append(loaded.predict(np.ones((2, 4), dtype="float32")).tolist())
    except BaseException as error:
        results.append(repr(error))
threads = [threading.Thread(target=load) for _ in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
print(__import__("json").dumps(results))
"""


def test_many_processes_and_threads_load_one_bundle(built: dict[str, Bundle]) -> None:
    path = str(built["custom_layer"].path)
    processes = [_popen("-c", LOADER, path, env=service_env()) for _ in range(2)]
    outputs = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        outputs.extend(json.loads(stdout.strip().splitlines()[-1]))
    assert len(outputs) == 8
    assert all(isinstance(result, list) for result in outputs), outputs
    assert all(result == outputs[0] for result in outputs)


def test_verify_while_a_force_rebuild_replaces_the_bundle(
    built: dict[str, Bundle], tmp_path: Path
) -> None:
    """Each verify sees the old bundle, the new one, or reports problems; never raises."""
    out = tmp_path / "out"
    shutil.copytree(built["sequential"].path, out)
    old_digest = built["sequential"].digest
    process = _popen(
        "-m", "bundler", "build", SEQUENTIAL, "-o", str(out), "--force", "--json", "--no-rehearse"
    )
    outcomes: list[str | None] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def verify_loop() -> None:
        while not stop.is_set():
            try:
                report = verify_bundle(out)
            except BaseException as error:  # asserted below: none may escape
                errors.append(error)
                return
            outcomes.append(report.digest if report.ok else "problems")

    thread = threading.Thread(target=verify_loop)
    thread.start()
    stdout, stderr = process.communicate(timeout=300)
    stop.set()
    thread.join()
    assert process.returncode == 0, stderr
    new_digest = json.loads(stdout)["digest"]
    assert not errors, errors
    assert len(outcomes) > 10
    assert set(outcomes) <= {old_digest, new_digest, "problems"}, set(outcomes)
    assert outcomes[0] == old_digest
    report = verify_bundle(out)
    assert report.ok and report.digest == new_digest
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", new_digest)


def _config_bytes(path: Path) -> tuple[int, int]:
    """(offset, length) of config.json's stored or deflated bytes inside a .keras file."""
    import zipfile

    from bundler.files.keras_layout import data_start

    with zipfile.ZipFile(path) as archive, path.open("rb") as raw:
        info = archive.getinfo("config.json")
        return data_start(raw, info), info.compress_size


def test_a_model_keras_rewritten_while_verify_reads_it_is_a_verdict(
    copy_bundle: Any, tmp_path: Path
) -> None:
    """A writer flips bytes of config.json in place, back and forth, while verify runs again and
    again: each verify reports model.keras changed (or finds it intact), never raises, and the
    rewrite lands between the hashing and the config scan at least once (what used to let
    zipfile's BadZipFile escape)."""
    root = copy_bundle("sequential")
    path = root / "model.keras"
    good = path.read_bytes()
    start, length = _config_bytes(path)
    flipped = bytearray(good)
    for at in range(start + length // 3, start + length // 3 + 16):
        flipped[at] ^= 0x01
    stop = threading.Event()

    def rewrite() -> None:
        descriptor = os.open(path, os.O_WRONLY)
        try:
            while not stop.is_set():
                os.pwrite(descriptor, bytes(flipped), 0)
                os.pwrite(descriptor, good, 0)
        finally:
            os.close(descriptor)

    writer = threading.Thread(target=rewrite)
    writer.start()
    seen: list[str] = []
    try:
        for _ in range(3000):  # about 30 s at most here; it takes a few dozen on this machine
            report = verify_bundle(root)  # raises nothing: asserted by running at all
            assert {(p.path, p.kind) for p in report.problems} <= {("model.keras", "changed")}
            seen += [p.message for p in report.problems if "while it was being read" in p.message]
            if seen:
                break
    finally:
        stop.set()
        writer.join()
    assert seen, "the rewrite never landed between the hashing and the scan"
    assert seen[0].startswith("changed while it was being read ("), seen[0]
