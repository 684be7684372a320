"""Cold start rows: loading a bundle's model vs Keras loading the same ``model.keras``.

- ``coldstart_load``: ``load_bundle(verify=False)`` vs ``keras.models.load_model`` in this process
  (medians of interleaved runs, warm page cache): the weights read in place vs Keras's copy.
- ``coldstart_first_prediction``: a fresh process from start to its first prediction,
  ``import bundler; load_bundle(verify=True).predict`` vs ``import keras; load_model().predict``
  (both import the component module the model's custom layer comes from).
- ``coldstart_load_peak_rss`` / ``coldstart_build_peak_rss``: the peak RSS of those fresh
  processes, and of a process that builds the bundle vs one that builds the model, saves it and
  exports it (what ``bundle build`` does besides hashing).

``python -m benchmarks --only coldstart`` runs these alone (default sizes 25M, 200M and 1B).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TARGETS = {
    "coldstart_load": (0.5, "<= 0.5x bare load_model at 200M and above"),
    "coldstart_first_prediction": (1.0, "verified load + predict <= 1.0x bare Keras's"),
    "coldstart_load_peak_rss": (1.1, "<= 1.1x bare Keras's"),
    "coldstart_build_peak_rss": (1.1, "<= 1.1x bare save + export"),
}

_PEAK = "import json, resource; print(json.dumps({'rss': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))"  # noqa: E501

_OURS_FIRST = """
import bundler, numpy as np
loaded = bundler.load_bundle({bundle!r}, verify=True)
loaded.predict(np.ones((1, loaded.model.inputs[0].shape[1]), "float32"))
"""
_BARE_FIRST = """
import keras, numpy as np, bench_layers
model = keras.models.load_model({keras_file!r})
model.predict(np.ones((1, model.inputs[0].shape[1]), "float32"), verbose=0)
"""
_OURS_BUILD = "import bundler; bundler.build_bundle({manifest!r}, {out!r}, rehearse=False)"
_BARE_BUILD = """
import bench_layers
model = bench_layers.build({params})
model.save({out!r} + "/model.keras")
model.export({out!r} + "/saved_model", verbose=False)
"""


def _process(code: str, src: Path) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of a fresh Python running ``code``."""
    import bundler

    # the bundler this benchmark imported (a checkout may not be the installed one), then the model
    here = Path(bundler.__file__).resolve().parent.parent
    env = dict(
        os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join([str(here), str(src)])
    )
    os.sync()
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code + "\n" + _PEAK],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"benchmark process failed:\n{done.stderr[-2000:]}")
    return took, int(json.loads(done.stdout.strip().splitlines()[-1])["rss"])


def coldstart_rows(
    params: int,
    repeat: int,
    work: Path,
    write_workspace: Callable[[Path, int], Path],
    row: Callable[..., dict[str, Any]],
    paired_times: Callable[..., tuple[float, float]],
) -> list[dict[str, Any]]:
    import statistics

    import keras

    import bundler

    folder = work / f"coldstart-{params}"
    manifest = write_workspace(folder, params)
    src = folder / "src"
    out, bare = folder / "bundle", folder / "bare"
    note = f"{params / 1e6:g}M params"

    # builds: once each (a 1B build takes minutes), in fresh processes, bare first
    bare.mkdir()
    _, bare_build_rss = _process(_BARE_BUILD.format(params=params, out=str(bare)), src)
    shutil.rmtree(bare)
    _, our_build_rss = _process(_OURS_BUILD.format(manifest=str(manifest), out=str(out)), src)
    keras_file = out / "model.keras"
    size = keras_file.stat().st_size
    note = f"{note}, model.keras {size / 1e6:.0f} MB"
    rows = [row("coldstart_build_peak_rss", our_build_rss / 1e9, bare_build_rss / 1e9, "GB", note)]

    sys.path.insert(0, str(src))
    try:
        import bench_layers  # noqa: F401  the component, as a service would import it

        t_ours, t_bare = paired_times(
            lambda: bundler.load_bundle(out, verify=False),
            lambda: keras.models.load_model(keras_file),
            repeat,
        )
    finally:
        sys.path.remove(str(src))
        sys.modules.pop("bench_layers", None)
    rows.append(row("coldstart_load", t_ours, t_bare, note=note))
    if params < 200_000_000:
        rows[-1]["meets_target"] = None  # the target is for large models

    ours_code = _OURS_FIRST.format(bundle=str(out))
    bare_code = _BARE_FIRST.format(keras_file=str(keras_file))
    _process(bare_code, src)  # untimed: warms the page cache and bytecode for both
    _process(ours_code, src)
    runs: tuple[list[tuple[float, int]], list[tuple[float, int]]] = ([], [])
    for _ in range(repeat):
        runs[1].append(_process(bare_code, src))
        runs[0].append(_process(ours_code, src))
    first = [statistics.median(t for t, _ in side) for side in runs]
    peak = [statistics.median(r for _, r in side) for side in runs]
    rows.append(row("coldstart_first_prediction", first[0], first[1], note=note))
    rows.append(row("coldstart_load_peak_rss", peak[0] / 1e9, peak[1] / 1e9, "GB", note))
    shutil.rmtree(folder, ignore_errors=True)
    return rows
