"""Side-by-side benchmark of bundler and the baselines, printed as ratios.

    python -m benchmarks                     # 1M, 25M and 200M parameters, median of 3 runs
    python -m benchmarks --sizes 1M,25M --repeat 5
    python -m benchmarks --quick             # a tiny model, one run: checks the script works

Every row is the median of ``--repeat`` runs, bundler next to what users would do without it:

- build:   ``bundler.build_bundle`` vs the factory + ``model.save(".keras")`` + ``model.export()``
           (``rehearse=False``: the build's own work; the rehearsal's cost is its own rows)
- load:    ``load_bundle(verify=True/False)`` vs ``keras.models.load_model`` of the same file
- verify:  ``verify_bundle`` vs ``sha256sum`` and vs hashlib on one thread, over the same files
- start:   ``bundle verify`` as a process vs ``python -c pass`` and ``-c "import tensorflow"``
- peer:    MLflow's tensorflow flavour save/load, when ``mlflow`` is importable (else a note)
- identity: the source-identity check, and a load that replays examples (``identity.py``)
- serve:   ``bundle serve`` requests/s and p50/p99 latency at 1 and 8 clients vs ``predict``
           in-process, and the latency during a reload (``benchmarks/serve.py``; needs the
           ``serve`` extra, else a note). ``--only serve`` runs these rows alone.
- reproducible build: ``build_bundle`` vs the same build with canonicalisation switched off
- diff:    ``bundle diff`` of two identical bundles vs ``python -c pass``; of two bundles with
           every weight changed vs reading both weight files with h5py, and vs reading both
           ``model.keras`` files as bytes

``--only reproducible`` runs just the last two groups (for the sizes given), ``--only serve``
the serve rows, ``--only verify`` verify against the limit of hashing the same files on two
threads, in turns (20M parameters, a 160 MB bundle, unless ``--sizes``).
- coldstart: ``load_bundle`` vs ``keras.models.load_model``, in process and from a fresh process
           to its first prediction, with peak RSS of loads and builds (``benchmarks/coldstart.py``).
           ``--only coldstart`` runs these rows alone, at 25M, 200M and 1B unless ``--sizes``.
- rehearsal: ``bundle build`` and ``build_bundle`` with the load rehearsed in a fresh interpreter
           vs without (``benchmarks/rehearsal.py``). ``--only rehearsal`` runs these rows alone,
           at 25M unless ``--sizes``.

Results go to ``benchmarks/results/<UTC time>.json`` as well (``--out`` to change), so that a later
change can be compared with this one. Timings are warm-cache (each run follows the one before)
but start with no dirty pages: `os.sync()` runs, untimed, before each one.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from .coldstart import TARGETS as COLDSTART_TARGETS
from .coldstart import coldstart_rows
from .identity import TARGETS as IDENTITY_TARGETS
from .identity import identity_rows
from .rehearsal import TARGETS as REHEARSAL_TARGETS
from .rehearsal import rehearsal_rows
from .workspace import write_workspace

HERE = Path(__file__).resolve().parent
TARGETS = {  # metric -> (largest acceptable ratio, the target)
    "build": (1.15, "<= 1.15x bare save + export"),
    "load_verify_false": (1.05, "<= 1.05x bare load_model"),
    "startup_vs_pass": (None, "bundle verify start <= 0.3 s"),
    **IDENTITY_TARGETS,
    "reproducible_build": (1.05, "<= 1.05x the build without canonicalising"),
    "diff_identical_vs_pass": (None, "bundle diff of identical bundles <= 0.3 s over bare Python"),
    "diff_all_weights_changed": (1.2, "<= 1.2x reading both weight files once (h5py)"),
    "verify_vs_2_thread_sha256": (1 / 0.9, "<= 1.11x: at least 0.9 of the hashing limit"),
    **COLDSTART_TARGETS,
    **REHEARSAL_TARGETS,
}


def parse_size(text: str) -> int:
    text = text.strip().upper()
    scale = {"K": 1_000, "M": 1_000_000, "G": 1_000_000_000, "B": 1_000_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if text[-1:] in "KMGB" else text) * scale)


def _timed(action: Callable[[], Any], setup: Callable[[], Any] | None) -> float:
    if setup is not None:
        setup()
    gc.collect()  # the last run's model is freed now, not in the middle of this one
    # the last run's dirty pages are written back now, not in the middle of this one: a bare
    # save leaves gigabytes for the kernel to flush, which would slow whichever run came next
    os.sync()
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def median_time(
    action: Callable[[], Any], repeat: int, setup: Callable[[], Any] | None = None
) -> float:
    """Median wall time of ``repeat`` runs, after one untimed run that warms caches and imports."""
    _timed(action, setup)
    return statistics.median(_timed(action, setup) for _ in range(repeat))


def paired_times(
    ours: Callable[[], Any],
    base: Callable[[], Any],
    repeat: int,
    setup_ours: Callable[[], Any] | None = None,
    setup_base: Callable[[], Any] | None = None,
) -> tuple[float, float]:
    """Medians of bundler and baseline runs taken in turns, so drift in the machine hits both."""
    _timed(base, setup_base)
    _timed(ours, setup_ours)
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        times[1].append(_timed(base, setup_base))
        times[0].append(_timed(ours, setup_ours))
    return statistics.median(times[0]), statistics.median(times[1])


def bundle_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != "bundle.lock.json")


def hashlib_one_thread(paths: list[Path]) -> None:
    for path in paths:
        digest = hashlib.sha256()
        with path.open("rb", buffering=0) as stream:
            while chunk := stream.read(4 << 20):
                digest.update(chunk)


def sha256sum(paths: list[Path]) -> None:
    subprocess.run(["sha256sum", *map(str, paths)], check=True, capture_output=True)


def row(metric: str, ours: float, base: float, unit: str = "s", note: str = "") -> dict[str, Any]:
    limit = TARGETS.get(metric, (None, ""))[0]
    ratio = ours / base if base else float("nan")
    return {
        "metric": metric,
        "bundler": ours,
        "baseline": base,
        "unit": unit,
        "ratio": ratio,
        "target": TARGETS.get(metric, (None, ""))[1],
        "meets_target": None if limit is None else ratio <= limit,
        "note": note,
    }


def bench_size(params: int, repeat: int, work: Path) -> list[dict[str, Any]]:
    import keras

    import bundler

    folder = work / f"size-{params}"
    manifest = write_workspace(folder, params)
    sys.path.insert(0, str(folder / "src"))
    import bench_layers  # the component module, as a service would import it

    out = folder / "bundle"
    bare = folder / "bare"
    rows = []

    def clean(path: Path) -> Callable[[], None]:
        return lambda: shutil.rmtree(path, ignore_errors=True)

    def build_ours() -> None:
        bundler.build_bundle(manifest, out, rehearse=False)

    def build_bare() -> None:
        bare.mkdir()
        model = bench_layers.build(params)
        model.save(bare / "model.keras")
        model.export(str(bare / "saved_model"), verbose=False)

    def build_bare_durable() -> None:  # what a build must also do: flush before it is trusted
        build_bare()
        for path in bundle_files(bare):
            with path.open("rb") as stream:
                os.fsync(stream.fileno())

    t_ours, t_bare = paired_times(
        build_ours, build_bare, repeat, setup_ours=clean(out), setup_base=clean(bare)
    )
    t_durable = median_time(build_bare_durable, repeat, setup=clean(bare))
    size = sum(p.stat().st_size for p in bundle_files(out))
    note = f"{params / 1e6:g}M params, bundle {size / 1e6:.0f} MB"
    rows.append(row("build", t_ours, t_bare, note=note))
    rows.append(row("build_vs_bare_plus_fsync", t_ours, t_durable, note=note))

    keras_file = out / "model.keras"
    t_unverified, t_keras = paired_times(
        lambda: bundler.load_bundle(out, verify=False),
        lambda: keras.models.load_model(keras_file),
        repeat,
    )
    t_verified = median_time(lambda: bundler.load_bundle(out, verify=True), repeat)
    rows.append(row("load_verify_false", t_unverified, t_keras, note=note))
    t_hash = median_time(lambda: bundler.verify_bundle(out), repeat)
    rows.append(
        row("load_verify_true", t_verified, t_keras + t_hash, note=note + "; baseline = load+hash")
    )
    rows.extend(identity_rows(out, repeat, note, row, median_time))

    files = bundle_files(out)
    t_sum = median_time(lambda: sha256sum(files), repeat)
    t_one = median_time(lambda: hashlib_one_thread(files), repeat)
    rows.append(row("verify_vs_sha256sum", t_hash, t_sum, note=note))
    rows.append(row("verify_vs_hashlib_1_thread", t_hash, t_one, note=note))
    rows.append(row("verify_throughput", size / t_hash / 1e9, size / t_one / 1e9, "GB/s", note))

    peer = bench_mlflow(params, repeat, folder)
    if peer is not None:
        t_save, t_load = peer
        rows.append(row("mlflow_save_vs_bundle_build", t_ours, t_save, note=note))
        rows.append(row("mlflow_load_vs_load_bundle", t_unverified, t_load, note=note))
    sys.path.remove(str(folder / "src"))
    shutil.rmtree(folder, ignore_errors=True)
    return rows


@contextlib.contextmanager
def canonicalising(enabled: bool) -> Iterator[None]:
    """The build as it is, or (``enabled=False``) as it was before builds were reproducible."""
    import keras

    import bundler.build.export as export
    import bundler.build.pipeline as build

    # the names as the build looks them up: imported into its modules, so patched there, by name
    replacements: dict[tuple[ModuleType, str], Callable[[Any], Any]] = {
        (build, "canonicalise_keras_file"): lambda path: None,
        (build, "canonicalise_saved_model"): lambda folder: None,
        (export, "export_archive"): lambda model: keras.export.ExportArchive(),
    }
    saved = {(module, name): getattr(module, name) for module, name in replacements}
    if not enabled:
        for (module, name), replacement in replacements.items():
            setattr(module, name, replacement)
    try:
        yield
    finally:
        for (module, name), original in saved.items():
            setattr(module, name, original)


def read_whole(paths: list[Path]) -> None:
    buffer = bytearray(4 << 20)
    for path in paths:
        with path.open("rb", buffering=0) as stream:
            while stream.readinto(buffer):
                pass


def read_weights(paths: list[Path]) -> None:
    """Every weight of each ``model.keras``, read into memory with h5py, one dataset at a time."""
    from bundler.diff.keras_weights import KerasFile

    for path in paths:
        with KerasFile(path.parent, path.name, path.stat().st_size) as keras_file:
            for variable in keras_file.variables().values():
                keras_file.h5[variable.path][()]


def bench_reproducible(params: int, repeat: int, work: Path) -> list[dict[str, Any]]:
    """Reproducible build vs the build without it; bundle diff, identical and all-changed."""
    import bundler
    from bundler.diff.bundles import diff_bundles

    folder = work / f"repro-{params}"
    manifest = write_workspace(folder, params)
    out, plain = folder / "bundle", folder / "plain"

    def clean(path: Path) -> Callable[[], None]:
        return lambda: shutil.rmtree(path, ignore_errors=True)

    def build(target: Path, enabled: bool) -> Callable[[], None]:
        def run() -> None:
            with canonicalising(enabled):
                bundler.build_bundle(manifest, target, rehearse=False)

        return run

    t_ours, t_plain = paired_times(
        build(out, True),
        build(plain, False),
        repeat,
        setup_ours=clean(out),
        setup_base=clean(plain),
    )
    shutil.rmtree(plain, ignore_errors=True)
    size = sum(p.stat().st_size for p in bundle_files(out))
    note = f"{params / 1e6:g}M params, bundle {size / 1e6:.0f} MB"
    rows = [row("reproducible_build", t_ours, t_plain, note=note)]

    twin = folder / "twin"  # the same files under another name: hard links, no disk
    for path in [*bundle_files(out), out / "bundle.lock.json"]:
        target = twin / path.relative_to(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, target)
    other = folder / "other"
    bundler.build_bundle(write_workspace(folder / "seed-1", params, seed=1), other, rehearse=False)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    peak = (  # VmHWM, not ru_maxrss: that one carries the benchmark's own peak across exec
        "import sys\n"
        "from bundler.cli.main import main\n"
        "code = main(sys.argv[1:])\n"
        "status = open('/proc/self/status').read().split('VmHWM:')[1].split()[0]\n"
        "print(status, file=sys.stderr)\n"
    )

    def diff(first: Path, second: Path) -> Callable[[], object]:
        command = [sys.executable, "-c", peak, "diff", str(first), str(second)]
        return lambda: subprocess.run(command, check=False, capture_output=True, env=env)

    t_same = median_time(diff(out, twin), repeat)
    t_pass = median_time(
        lambda: subprocess.run([sys.executable, "-c", "pass"], check=False, env=env), repeat
    )
    over = t_same - t_pass
    rows.append(row("diff_identical_vs_pass", t_same, t_pass, note=f"+{over:.3f} s; {note}"))
    rows[-1]["meets_target"] = over <= 0.3
    t_changed = median_time(lambda: diff_bundles(out, other), repeat)
    files = [out / "model.keras", other / "model.keras"]
    t_read = median_time(lambda: read_weights(files), repeat)
    t_bytes = median_time(lambda: read_whole(files), repeat)
    result = subprocess.run(
        [sys.executable, "-c", peak, "diff", str(out), str(other)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
    )
    rss = int(result.stderr.strip().splitlines()[-1]) / 1e3
    rows.append(
        row("diff_all_weights_changed", t_changed, t_read, note=f"peak RSS {rss:.0f} MB; {note}")
    )
    rows.append(row("diff_all_weights_changed_vs_bytes", t_changed, t_bytes, note=note))
    shutil.rmtree(folder, ignore_errors=True)
    return rows


def bench_mlflow(params: int, repeat: int, folder: Path) -> tuple[float, float] | None:
    try:
        import mlflow.tensorflow
    except ImportError:
        return None
    import bench_layers

    target = folder / "mlflow"

    def save() -> None:
        mlflow.tensorflow.save_model(bench_layers.build(params), str(target))

    t_save = median_time(save, repeat, setup=lambda: shutil.rmtree(target, ignore_errors=True))
    t_load = median_time(lambda: mlflow.tensorflow.load_model(str(target)), repeat)
    return t_save, t_load


def hash_limit(paths: list[Path], threads: int = 2) -> None:
    """Every file hashed once on ``threads`` threads, largest first: the limit verify can reach."""
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda path: hashlib_one_thread([path]), paths))


def bench_verify(params: int, repeat: int, work: Path) -> list[dict[str, Any]]:
    """``verify_bundle`` against the 2-thread sha256 limit over the same files, in turns:
    everything verify does beyond hashing (the lock, the walk, the graph and archive scans, the
    plan) is what keeps it under the limit. The bundle's component is on ``sys.path`` for the
    plan, as on a service."""
    import bundler

    # built by the command line, so that this process never imports TensorFlow: a deploy gate's
    # `bundle verify` does not, and TensorFlow's threads in the process slow verify measurably
    folder = work / f"verify-{params}"
    out = folder / "bundle"
    manifest = write_workspace(folder, params)
    subprocess.run(
        [sys.executable, "-m", "bundler", "build", str(manifest), "-o", str(out)],
        check=True,
        capture_output=True,
    )
    files = sorted(bundle_files(out), key=lambda path: path.stat().st_size, reverse=True)
    size = sum(path.stat().st_size for path in files)
    note = f"{params / 1e6:g}M params, bundle {size / 1e6:.0f} MB, hashing on 2 threads"
    sys.path.insert(0, str(folder / "src"))
    try:
        runs: dict[str, list[float]] = {"verify": [], "limit": []}
        actions = {"verify": lambda: bundler.verify_bundle(out), "limit": lambda: hash_limit(files)}
        for name in ("verify", "limit"):
            _timed(actions[name], None)  # warm: caches, imports, the thread pool's first start
        for turn in range(repeat):  # A B B A ...: drift in the machine hits both alike
            for name in ("verify", "limit") if turn % 2 == 0 else ("limit", "verify"):
                runs[name].append(_timed(actions[name], None))
    finally:
        sys.path.remove(str(folder / "src"))
    t_verify, t_limit = statistics.median(runs["verify"]), statistics.median(runs["limit"])
    shutil.rmtree(folder, ignore_errors=True)
    return [
        row("verify_throughput", size / t_verify / 1e9, size / t_limit / 1e9, "GB/s", note),
        row(
            "verify_vs_2_thread_sha256",
            t_verify,
            t_limit,
            note=f"{note}; {t_limit / t_verify:.2f} of the limit",
        ),
    ]


def bench_one_big_file(size: int, repeat: int, work: Path, small_bundle: Path) -> dict[str, Any]:
    """verify_bundle on a bundle dominated by one file of ``size`` bytes (shards in parallel)."""
    from bundler import verify_bundle
    from bundler.build.lock_writer import files_table
    from bundler.lock.model import lock_digest

    root = work / "one-big-file"
    shutil.copytree(small_bundle, root)
    big = root / "saved_model" / "variables" / "big.data"
    with big.open("wb") as stream:
        for _ in range(size // (16 << 20)):
            stream.write(os.urandom(16 << 20))
    lock_path = root / "bundle.lock.json"
    lock = json.loads(lock_path.read_text())
    lock["files"]["saved_model/variables/big.data"] = files_table(big.parent)["big.data"]
    lock["digest"] = lock_digest(lock)
    lock_path.write_text(json.dumps(lock))
    total = sum(p.stat().st_size for p in bundle_files(root))
    t_ours = median_time(lambda: verify_bundle(root), repeat)
    t_one = median_time(lambda: hashlib_one_thread(bundle_files(root)), repeat)
    result = row("verify_throughput_1GB_file", total / t_ours / 1e9, total / t_one / 1e9, "GB/s")
    result["target"] = ">= 1.8 GB/s warm cache"
    result["meets_target"] = total / t_ours / 1e9 >= 1.8
    shutil.rmtree(root, ignore_errors=True)
    return result


def bench_startup(repeat: int, small_bundle: Path, with_tensorflow: bool) -> list[dict[str, Any]]:
    # bytecode is written by the untimed first run, as an installed package would have it
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"

    def run(*args: str) -> Callable[[], object]:
        return lambda: subprocess.run(args, check=False, capture_output=True, env=env)

    python = sys.executable
    verify = median_time(run(python, "-m", "bundler", "verify", str(small_bundle)), repeat)
    bare = median_time(run(python, "-c", "pass"), repeat)
    rows = [row("startup_vs_pass", verify, bare, note=f"bundle verify: {verify:.3f} s")]
    rows[0]["meets_target"] = verify <= 0.3
    imported = median_time(run(python, "-c", "import bundler"), repeat)
    over = imported - bare
    rows.append(row("import_bundler_vs_pass", imported, bare, note=f"+{over:.3f} s"))
    rows[-1].update(target="import bundler <= 0.15 s over bare Python", meets_target=over <= 0.15)
    if with_tensorflow:
        tf = median_time(run(python, "-c", "import tensorflow"), repeat)
        rows.append(row("startup_vs_import_tensorflow", verify, tf))
    try:
        import mlflow  # noqa: F401
    except ImportError:
        return rows
    # what a service pays before its first load: bundler's loader and TensorFlow, vs MLflow's
    ready = median_time(run(python, "-c", "import bundler.load.loader, tensorflow"), repeat)
    peer = median_time(run(python, "-c", "import mlflow.tensorflow"), repeat)
    rows.append(row("mlflow_import_vs_bundler_import", ready, peer))
    return rows


def bench_serve_size(params: int, seconds: float, work: Path) -> list[dict[str, Any]]:
    """The serve rows for a model of ``params`` parameters (see benchmarks/serve.py)."""
    import bundler
    from benchmarks.serve import bench_serve

    folder = work / f"serve-{params}"
    manifest = write_workspace(folder, params)
    bundle = bundler.build_bundle(manifest, folder / "bundle", rehearse=False).path
    sys.path.insert(0, str(folder / "src"))
    try:
        return bench_serve(bundle, folder / "src", seconds, row, folder)
    finally:
        sys.path.remove(str(folder / "src"))
        sys.modules.pop("bench_layers", None)  # the next size's build reads its own copy
        shutil.rmtree(folder, ignore_errors=True)


def print_table(rows: list[dict[str, Any]], notes: list[str]) -> None:
    print(f"{'metric':30} {'bundler':>10} {'baseline':>10} {'ratio':>7}  target")
    for r in rows:
        unit = r["unit"]
        mark = {True: "ok", False: "MISS", None: ""}[r["meets_target"]]
        print(
            f"{r['metric']:30} {r['bundler']:>8.3f}{unit:>2} {r['baseline']:>8.3f}{unit:>2} "
            f"{r['ratio']:>7.2f}  {r['target']} {mark}  {r['note']}".rstrip()
        )
    for note in notes:
        print(f"note: {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--sizes", help="parameter counts (default: 1M,25M,200M; 25M,200M,1B for coldstart)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per row; the median is shown")
    parser.add_argument("--quick", action="store_true", help="tiny model, one run, no 1 GB file")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for the JSON")
    parser.add_argument(
        "--only",
        choices=("all", "reproducible", "serve", "coldstart", "rehearsal", "verify"),
        default="all",
        help="run every row (default), or only: the reproducible-build and diff rows, bundle "
        "serve's, the cold-start rows (loads vs bare Keras's), the rehearsal's (builds with "
        "and without it), or verify against the 2-thread sha256 limit",
    )
    args = parser.parse_args(argv)
    default_sizes = {"coldstart": "25M,200M,1B", "rehearsal": "25M", "verify": "20M"}.get(
        args.only, "1M,25M,200M"
    )
    sizes = (
        [20_000]
        if args.quick
        else [parse_size(s) for s in (args.sizes or default_sizes).split(",")]
    )
    repeat = 1 if args.quick else args.repeat

    import bundler
    from benchmarks.serve import available as serve_available
    from bundler.build.pipeline import build_bundle

    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bundler-bench-") as scratch:
        work = Path(scratch)
        small = (
            build_bundle(
                write_workspace(work / "small", 20_000), work / "small-bundle", rehearse=False
            ).path
            if args.only == "all"
            else work / "small-bundle"
        )
        if args.only in ("all", "reproducible"):
            for params in sizes:
                print(f"... {params / 1e6:g}M parameters", file=sys.stderr)
                if args.only == "all":
                    rows.extend(bench_size(params, repeat, work))
                rows.extend(bench_reproducible(params, repeat, work))
        if args.only == "all":
            if not args.quick:
                print("... one 1 GB file", file=sys.stderr)
                rows.append(bench_one_big_file(1 << 30, repeat, work, small))
            rows.extend(bench_startup(max(repeat, 5), small, with_tensorflow=not args.quick))

        if args.only == "verify":
            for params in sizes:
                print(f"... verify, {params / 1e6:g}M parameters", file=sys.stderr)
                rows.extend(bench_verify(params, repeat, work))
        if args.only == "coldstart":
            for params in sizes:
                print(f"... cold start, {params / 1e6:g}M parameters", file=sys.stderr)
                # a 1B model is minutes per build and gigabytes per load: one run of each
                runs = 1 if params >= 1_000_000_000 else repeat
                rows.extend(coldstart_rows(params, runs, work, write_workspace, row, paired_times))
        if args.only == "rehearsal":
            for params in sizes:
                print(f"... rehearsal, {params / 1e6:g}M parameters", file=sys.stderr)
                rows.extend(rehearsal_rows(params, repeat, work, write_workspace, row))
        if args.only in ("all", "serve") and serve_available():
            # a reload holds two models at once, beside this process's own: 25M is enough to see
            for params in [size for size in sizes if size <= 25_000_000]:
                print(f"... bundle serve, {params / 1e6:g}M parameters", file=sys.stderr)
                rows.extend(bench_serve_size(params, 1.0 if args.quick else 5.0, work))
        elif args.only in ("all", "serve"):
            notes.append("kserve is not installed: serve rows skipped (pip install -e '.[serve]')")
    try:
        import mlflow  # noqa: F401
    except ImportError:
        notes.append("mlflow is not installed: peer rows skipped (pip install mlflow to add them)")
    machine = {
        "python": platform.python_version(),
        "bundler": bundler.__version__,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "load_average": os.getloadavg(),
    }
    print_table(rows, notes)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = args.out / f"{stamp}{'-quick' if args.quick else ''}.json"
    document = {
        "created": stamp,
        "machine": machine,
        "repeat": repeat,
        "rows": rows,
        "notes": notes,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
