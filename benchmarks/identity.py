"""What component identity costs: hashing the defining sources, and replaying examples on load.

- ``identity_check``: the source-identity check one load or verify does (hash the files the lock
  pins, compare) vs the old whole-package hash, for the benchmark component and for keras_hub
  (an 18 MB package) when it is installed; target <= 5 ms.
- ``load_modified_replay``: ``load_bundle`` of a bundle whose component changed under the same
  version (a comment), which replays the golden examples before returning, vs a plain load of the
  same bundle; target <= 1.05x.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path
from typing import Any

TARGETS = {
    "identity_check": (None, "<= 5 ms a component"),
    "load_modified_replay": (1.05, "<= 1.05x a plain load_bundle"),
}


def _whole_package_sha256(base: Path, package: str) -> None:
    digest = hashlib.sha256()
    for path in sorted((base / package).rglob("*.py")):
        digest.update(path.read_bytes())


def identity_rows(
    out: Path, repeat: int, note: str, row: Any, median_time: Any
) -> list[dict[str, Any]]:
    """Rows for one benchmark bundle ``out`` whose component module is ``bench_layers``."""
    import bundler
    from bundler.components import installed_sources_digest, static_version

    lock = bundler.verify_bundle(out).lock
    assert lock is not None
    component = lock.components[0]
    installed = static_version(component.module)
    check = median_time(
        lambda: installed_sources_digest(installed, component.sources), max(repeat, 20)
    )
    rows = [row("identity_check", check * 1000, check * 1000, "ms", note + "; bench component")]
    try:
        import keras_hub  # noqa: F401 - only measured where installed

        hub = static_version("keras_hub")
        assert hub.origin is not None
        sources = {
            "keras_hub/src/models/backbone.py": "",
            "keras_hub/src/models/bert/bert_backbone.py": "",
        }
        base = hub.origin.parents[1]
        ours = median_time(lambda: installed_sources_digest(hub, sources), max(repeat, 20))
        whole = median_time(lambda: _whole_package_sha256(base, "keras_hub"), repeat)
        rows.append(
            row("identity_check", ours * 1000, whole * 1000, "ms", "keras_hub BertBackbone; "
                "baseline = hashing the whole package")
        )  # fmt: skip
    except ImportError:
        pass

    # the same bundle, with a comment added to its component: same version, other code
    src = Path(sys.modules["bench_layers"].__file__ or "")
    original = src.read_text()
    try:
        src.write_text("# changed under the same version\n" + original)
        plan = bundler.load_bundle(out, verify=False).compatibility
        assert plan.checks[0].status == "modified", plan.table()
        replayed = median_time(lambda: bundler.load_bundle(out, verify=False), repeat)
    finally:
        src.write_text(original)
    plain = median_time(lambda: bundler.load_bundle(out, verify=False), repeat)
    rows.append(row("load_modified_replay", replayed, plain, note=note))
    shutil.rmtree(out / "__pycache__", ignore_errors=True)
    return rows
