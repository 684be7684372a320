"""What component identity costs: hashing the pinned sources, and replaying examples on load.

- ``identity_check``: the source-identity check one load or verify does (hash the files the lock
  pins, compare), for the benchmark component, and for keras_hub's tiny ``ViTBackbone`` and
  ``BertBackbone`` when keras_hub is installed: the files pinned now (the code the model runs,
  ``bundler.build.model_sources``) hashed as a lock now says (tokens, with the bytes shortcut)
  against what a lock pinned before (the files defining the config's class and its bases, by their
  bytes); and the same files when every one of them changed (each one tokenized). Target 5 ms.
- ``load_modified_replay``: ``load_bundle`` of a bundle whose component changed under the same
  version (a line of code), which replays the golden examples before returning, vs a plain load
  of the same bundle; target <= 1.05x.

Before and after are timed in turns (ABBA), so that a busy machine slows both alike.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TARGETS = {
    "identity_check": (None, "<= 5 ms a component"),
    "load_modified_replay": (1.05, "<= 1.05x a plain load_bundle"),
}


def _abba(a: Callable[[], Any], b: Callable[[], Any], rounds: int) -> tuple[float, float]:
    """Median seconds of ``a`` and of ``b``, timed A B B A, ``rounds`` times."""
    times: dict[str, list[float]] = {"a": [], "b": []}
    for _ in range(rounds):
        for label in ("a", "b", "b", "a"):
            action = a if label == "a" else b
            start = time.perf_counter()
            action()
            times[label].append(time.perf_counter() - start)
    return statistics.median(times["a"]), statistics.median(times["b"])


def _hub_models() -> dict[str, Any]:
    import keras_hub

    return {
        "ViTBackbone": keras_hub.models.ViTBackbone(
            image_shape=(16, 16, 3), patch_size=8, num_layers=1, num_heads=2, hidden_dim=8,
            mlp_dim=16,
        ),
        "BertBackbone": keras_hub.models.BertBackbone(
            vocabulary_size=64, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16,
            max_sequence_length=12,
        ),
    }  # fmt: skip


def keras_hub_rows(repeat: int, row: Any) -> list[dict[str, Any]]:
    """identity_check rows for keras_hub's ViT and BERT: now vs before, unchanged and changed."""
    from bundler.build.model_sources import code_objects, defining_files
    from bundler.compat.components import installed_sources_digest, pin_sources, static_version
    from bundler.compat.source_hash import TOKENS_V1

    hub = static_version("keras_hub")
    assert hub.origin is not None
    base = hub.origin.parents[1]
    rows = []
    for name, model in _hub_models().items():
        now = pin_sources(defining_files("keras_hub", code_objects(model, ["keras_hub"]), base))
        before = pin_sources(defining_files("keras_hub", [type(model)], base)).source_bytes
        size = sum((base / rel).stat().st_size for rel in now.sources) / 1000

        def check_now(raw: dict[str, str] = now.source_bytes, table: Any = now.sources) -> None:
            installed_sources_digest(hub, table, TOKENS_V1, raw)

        def check_before(table: dict[str, str] = before) -> None:
            installed_sources_digest(hub, table, None)

        ours, old = _abba(check_now, check_before, max(repeat, 20))
        changed, _ = _abba(lambda: check_now({}), check_before, max(repeat, 5))
        what = f"keras_hub {name}: {len(now.sources)} files ({size:.0f} KB), before {len(before)}"
        rows.append(row("identity_check", ours * 1000, old * 1000, "ms",
                        f"{what}; tokens, bytes unchanged vs bytes before"))  # fmt: skip
        rows.append(row("identity_check", changed * 1000, old * 1000, "ms",
                        f"{what}; every file changed, so tokenized, vs bytes before"))  # fmt: skip
    return rows


def identity_rows(
    out: Path, repeat: int, note: str, row: Any, median_time: Any
) -> list[dict[str, Any]]:
    """Rows for one benchmark bundle ``out`` whose component module is ``bench_layers``."""
    import bundler
    from bundler.compat.components import installed_sources_digest, static_version

    lock = bundler.verify_bundle(out).lock
    assert lock is not None
    component = lock.components[0]
    installed = static_version(component.module)
    check = median_time(
        lambda: installed_sources_digest(
            installed, component.sources, component.source_hash, component.source_bytes
        ),
        max(repeat, 20),
    )
    rows = [row("identity_check", check * 1000, check * 1000, "ms", note + "; bench component")]
    try:
        import keras_hub  # noqa: F401 - only measured where installed
    except ImportError:
        pass
    else:
        rows.extend(keras_hub_rows(repeat, row))

    # the same bundle, with a line of code added to its component: same version, other code
    src = Path(sys.modules["bench_layers"].__file__ or "")
    original = src.read_text()
    try:
        src.write_text(original + "\n_CHANGED_UNDER_THE_SAME_VERSION = True\n")
        plan = bundler.load_bundle(out, verify=False).compatibility
        assert plan.checks[0].status == "modified", plan.table()
        replayed = median_time(lambda: bundler.load_bundle(out, verify=False), repeat)
    finally:
        src.write_text(original)
    plain = median_time(lambda: bundler.load_bundle(out, verify=False), repeat)
    rows.append(row("load_modified_replay", replayed, plain, note=note))
    shutil.rmtree(out / "__pycache__", ignore_errors=True)
    return rows


if __name__ == "__main__":  # the keras_hub rows alone: python -m benchmarks.identity [ROUNDS]
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20

    def _row(metric: str, ours: float, base: float, unit: str = "s", note: str = "") -> Any:
        return {"metric": metric, "bundler": ours, "baseline": base, "unit": unit, "note": note}

    for entry in keras_hub_rows(rounds, _row):
        print(f"{entry['bundler']:8.3f} {entry['unit']}  before {entry['baseline']:7.3f} "
              f"{entry['unit']}  {entry['note']}")  # fmt: skip
