"""Fuzzing helpers shared by the lock, signature-file and registry-manifest fuzzers.

Each fuzzer starts from a real document and changes a few values (``mutated``), then perhaps
corrupts its text (``mutated_document``); the property is always the same: a verdict (exit 1 or
2 with a message, a ``BundleError`` from the API), never an internal error or a raw exception.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from bundler.cli.main import main
from bundler.errors import BundleError, SignatureError
from bundler.registry.api import fetch
from bundler.trust.signing import verify_signature

from .hostile_registry import HostileRegistry

FUZZ = settings(
    max_examples=int(os.environ.get("BUNDLER_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(max_size=12)
    | st.sampled_from(["../x", "/x", "model.keras", "sha256:" + "0" * 64, "0" * 64, "1.2.0"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


hostile_text = st.sampled_from(
    ['{"a": 1, "a": 2}', "NaN", "1e400", "9" * 30, '"\\ud800"', "[" * 5000, '"\x1b[2J"']
)


def json_paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON document, as the keys and indices leading to it."""
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += json_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += json_paths(value, (*prefix, index))
    return found


def mutated(data: st.DataObject, original: Any) -> Any:
    """``original`` with one to three values replaced by arbitrary JSON, or removed."""
    document = copy.deepcopy(original)
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from(json_paths(document)))
        value = data.draw(json_values)
        if not where:
            document = value
            continue
        parent = document
        for part in where[:-1]:
            parent = parent[part]
        if isinstance(parent, dict) and data.draw(st.booleans()):
            parent.pop(where[-1])
        else:
            parent[where[-1]] = value
    return document


def mutated_document(data: st.DataObject, original: Any) -> str:
    """``original`` with a few values replaced or removed, as JSON text, perhaps truncated or
    with a hostile token spliced in (duplicate keys, NaN, huge numbers, lone surrogates ...)."""
    text = json.dumps(mutated(data, original))
    choice = data.draw(st.integers(0, 3))
    if choice == 1:
        text = text[: data.draw(st.integers(0, len(text)))]
    elif choice == 2 and text.endswith("}"):
        text = text[:-1] + ', "layers": ' + data.draw(hostile_text) + "}"
    elif choice == 3:
        token = data.draw(hostile_text)
        at = data.draw(st.integers(0, len(text)))
        text = text[:at] + token + text[at:]
    return text


def run_main(*args: str) -> tuple[int, str, str]:
    """The command line in this process, its output through strict UTF-8 streams, as a
    terminal would have it: an unencodable character would be an internal error."""
    out, err = io.BytesIO(), io.BytesIO()
    stdout = io.TextIOWrapper(out, encoding="utf-8", errors="strict")
    stderr = io.TextIOWrapper(err, encoding="utf-8", errors="strict")
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(list(args))
    stdout.flush()
    stderr.flush()
    return code, out.getvalue().decode(), err.getvalue().decode()


def assert_signature_file_gives_a_verdict(
    root: Path, filename: str, text: str, public: Path
) -> None:
    """``text`` as the bundle's signature file: the API refuses it with a SignatureError or
    accepts it; the command line exits 0 or 1 with one error line naming the file, never an
    internal error."""
    (root / filename).write_text(text, errors="surrogatepass")
    with contextlib.suppress(SignatureError):
        verify_signature(root, [public])
    code, _out, errors = run_main("verify", str(root), "--key", str(public))
    assert code in (0, 1) and "internal error" not in errors, errors
    assert code == 0 or errors.startswith(f"bundle: error: {root / filename}: ")


def assert_pull_gives_a_verdict(hostile: HostileRegistry, manifest: str) -> None:
    """A registry serving ``manifest`` (and no blob): the API raises a BundleError, the command
    line prints one escaped error line and exits 1 or 2, never an internal error."""
    hostile.mode = "manifest"
    hostile.manifest = manifest.encode("utf-8", "surrogatepass")
    reference = f"oci://{hostile.host}/ml/fuzz:1.0.0"
    with pytest.raises(BundleError):  # no blob is ever served: it cannot succeed
        fetch(reference)
    code, _, errors = run_main("pull", reference)
    assert code in (1, 2) and errors.startswith("bundle: error: "), errors
    assert "internal error" not in errors and "\x1b" not in errors
