"""The graph safety scan: may ``saved_model/`` be served, judged from ``saved_model.pb`` alone?

The graph path (``policy="fallback"``) runs whatever the SavedModel's functions say, and so do
other loaders of ``saved_model/`` (TensorFlow Serving, ``tf.compat.v1.saved_model.loader``): a
TensorFlow graph can do more than arithmetic: read and write files (``ReadFile``, ``WriteFile``,
``SaveV2`` with a path of its choosing), list folders, call back into Python (``PyFunc``), print
to a file, hand out uninitialised memory. A bundle's author controls that graph as much as
``model.keras``. So before TensorFlow loads it, every node any loader could run is judged: every
node of the top-level graph (serving signatures, the init and main ops, asset initialisers and the
saver's nodes all live there) and of every function in its library (what those call). Each op
must be one ``graph_ops.ALLOWED_OPS`` lists, with attributes that pass ``ATTRIBUTE_RULES``, or an
op of a known op library the lock names (``op_libraries``); anything else, an unknown op
included, is refused.

The one exception is checkpointing. Every SavedModel TensorFlow writes carries a save function and
a restore function, called from the top-level graph through its ``saver_def`` by loaders that
restore variables by running the graph (TensorFlow Serving runs the restore op at every load).
Checkpoint ops are allowed only in such a *saver function*: one no other function in the library
calls and the object graph (what the Python loader builds callables from) never names, called at
the top level only by the save or restore node the ``saver_def`` names, with the ``saver_def``'s
filename placeholder as its first argument. Inside it, every path a checkpoint op takes must be
made from that argument (the argument itself, joined with constant suffixes that hold no ``..``,
sharded, packed, selected), never from a constant or another argument; and the restore function
may only read (``RestoreV2``), the save function only write. Which functions those are and what
their paths are made of is ``saver_scan``'s.

Also refused: a SavedModel without an object graph (a TensorFlow 1 SavedModel, whose loader runs
its init and restore ops; Keras exports always have one), a ``saved_model.pbtxt`` or
``saved_model.cpb`` beside ``saved_model.pb`` (other loaders read those instead), and an asset
whose path is not a plain relative path inside ``saved_model/assets/`` listed in the lock.

It reads ``saved_model.pb`` itself (``saved_model_proto``, over the strict wire reader of
``protowire``), so ``bundle verify`` runs it without TensorFlow, on the bytes it hashes
(``judge_saved_model``); the file is bounded in size (``SAVED_MODEL_MAX_BYTES``), nesting by the
structure read, and a malformed file is a finding, never an exception.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bundler.compat.op_libraries import library_of, locked_records
from bundler.errors import BuildError, UnsafeBundleError, UnsafeLoadWarning
from bundler.lock.model import Lock
from bundler.lock.paths import read_plain_file, unsafe_path_reason
from bundler.problems import Problem
from bundler.scans.graph_ops import ALLOWED_OPS, ATTRIBUTE_RULES, REFUSED_OPS, SAVER_OPS
from bundler.scans.protowire import WireError
from bundler.scans.saved_model_proto import Function, MetaGraph, Node, read_meta_graphs
from bundler.scans.saver import ROLE_OPS, path_problems, saver_roles

SAVED_MODEL_FILENAME = "saved_model.pb"
OTHER_GRAPH_FILES = ("saved_model.pbtxt", "saved_model.cpb")  # read by loaders before or instead
SAVED_MODEL_MAX_BYTES = 256 << 20
MAX_REPORTED = 20  # findings listed in a refusal or a verify report; a hostile graph has many
log = logging.getLogger("bundler")


@dataclass(frozen=True)
class Finding:
    """One reason the graph must not be served: where (function and node) and what."""

    function: str | None  # None: the top-level graph
    node: str
    op: str
    message: str

    def __str__(self) -> str:
        if not self.node and not self.function:
            return self.message
        where = f"function {self.function!r}" if self.function else "the top-level graph"
        return f"{where}, node {self.node!r}: {self.message}"


@dataclass(frozen=True)
class GraphVerdict:
    """The scan of one SavedModel: why it must not be served (one line each; none if it may),
    and the ops of each known op library it uses, by the library's module."""

    findings: tuple[str, ...]
    libraries: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def _op_findings(
    function: str | None,
    nodes: Iterable[Node],
    library: Mapping[str, Function],
    role: frozenset[str],
    allowed_libraries: Collection[str] | None,
    used: dict[str, set[str]],
) -> list[Finding]:
    findings = []
    for node in nodes:
        op = node.op
        for callee in node.calls:
            if callee not in library:
                findings.append(
                    Finding(
                        function,
                        node.name,
                        op,
                        f"op {op!r} calls function {callee!r}, which is not in the "
                        "SavedModel's function library",
                    )
                )
        if op in ALLOWED_OPS:
            rule = ATTRIBUTE_RULES.get(op)
            reason = rule(node) if rule is not None else None
            if reason is not None:
                findings.append(Finding(function, node.name, op, f"op {op!r} {reason}"))
            continue
        if op in library or (op in SAVER_OPS and role and all(op in ROLE_OPS[r] for r in role)):
            continue
        owner = library_of(op)
        if owner is not None:
            used.setdefault(owner.module, set()).add(op)
            if allowed_libraries is None or owner.module in allowed_libraries:
                continue
            reason = (
                f"is an op of {owner.distribution}, which the lock does not name among the op "
                "libraries to load"
            )
        elif op in SAVER_OPS:
            reason = (
                "reads or writes a checkpoint at a path the graph chooses (allowed only in the "
                "save and restore functions that only the top-level graph's saver calls, "
                "restoring in one and saving in the other)"
            )
        elif op in REFUSED_OPS:
            reason = REFUSED_OPS[op]
        else:
            reason = "is not an op a Keras export contains"
        findings.append(Finding(function, node.name, op, f"op {op!r} {reason}"))
    return findings


def scan_meta_graph(
    meta: MetaGraph,
    assets_in_lock: Callable[[str], bool],
    libraries: Collection[str] | None = None,
    used: dict[str, set[str]] | None = None,
) -> list[Finding]:
    """Why one meta graph must not be served. ``libraries``: the op libraries the lock names
    (None: any known one, as at build); the library ops found are added to ``used``."""
    used = {} if used is None else used
    findings: list[Finding] = []
    if meta.object_graph is None:
        findings.append(
            Finding(
                None,
                "",
                "",
                "the SavedModel has no object graph (a TensorFlow 1 SavedModel, whose loader "
                "runs its init ops); Keras exports always have one",
            )
        )
    roles = saver_roles(meta)
    findings += _op_findings(None, meta.nodes, meta.functions, frozenset(), libraries, used)
    for name, function in meta.functions.items():
        role = roles.get(name, frozenset())
        findings += _op_findings(name, function.nodes, meta.functions, role, libraries, used)
        if role:
            findings += [Finding(name, *problem) for problem in path_problems(function)]
    for function_name, gradient in meta.gradients:
        for name in (function_name, gradient):
            if name not in meta.functions:
                findings.append(
                    Finding(None, "", "", f"a gradient names function {name!r}, not in the library")
                )
    for asset in meta.assets:
        reason = unsafe_path_reason(asset)
        if reason is not None:
            findings.append(Finding(None, "", "", f"asset path {asset!r} {reason}"))
        elif not assets_in_lock(f"assets/{asset}"):
            findings.append(
                Finding(None, "", "", f"asset {asset!r} is not a file of the bundle's SavedModel")
            )
    return findings


def judge_saved_model(
    data: bytes, saved_model: str, files: Collection[str], libraries: Collection[str] | None
) -> GraphVerdict:
    """The scan of ``saved_model.pb``'s bytes, for the SavedModel folder ``saved_model`` of a
    bundle whose files (the lock's table) are ``files``; ``libraries`` as in ``scan_meta_graph``."""
    found = [
        f"{saved_model}/{other} is read by TensorFlow's loaders instead of {SAVED_MODEL_FILENAME}; "
        "a Keras export never writes it"
        for other in OTHER_GRAPH_FILES
        if f"{saved_model}/{other}" in files
    ]
    try:
        meta_graphs = read_meta_graphs(data)
    except WireError as error:
        return GraphVerdict((*found, f"is not a valid SavedModel: {error}"))
    if not meta_graphs:
        return GraphVerdict((*found, "holds no graph"))

    def listed(asset: str) -> bool:
        return f"{saved_model}/{asset}" in files

    used: dict[str, set[str]] = {}
    found += [
        str(f) for meta in meta_graphs for f in scan_meta_graph(meta, listed, libraries, used)
    ]
    return GraphVerdict(tuple(found), {module: tuple(sorted(ops)) for module, ops in used.items()})


def read_saved_model(root: Path, saved_model: str) -> bytes | str:
    """The bytes of ``root/saved_model/saved_model.pb``, or why they cannot be read."""
    try:
        return read_plain_file(root / saved_model / SAVED_MODEL_FILENAME, SAVED_MODEL_MAX_BYTES)
    except OSError as error:
        return f"cannot be read: {error.strerror or error}"
    except ValueError as error:  # a link, a FIFO, larger than the bound
        return str(error)


def scan_saved_model(
    root: Path,
    saved_model: str,
    files: Collection[str],
    libraries: Collection[str] | None = (),
) -> GraphVerdict:
    """Why the SavedModel ``root/saved_model`` must not be served (``judge_saved_model``)."""
    data = read_saved_model(root, saved_model)
    if isinstance(data, str):
        return GraphVerdict((data,))
    return judge_saved_model(data, saved_model, files, libraries)


def lock_libraries(lock: Lock) -> tuple[str, ...]:
    """The op library modules a lock names: the ones a graph may use."""
    return tuple(library.module for library in lock.op_libraries)


def check_graph(
    root: Path,
    saved_model: str,
    files: Collection[str],
    libraries: Collection[str],
    *,
    unsafe: bool,
) -> None:
    """Refuse to serve an unsafe graph (UnsafeBundleError); with ``unsafe=True``, say so loudly."""
    findings = scan_saved_model(root, saved_model, files, libraries).findings
    if not findings:
        return
    where = root / saved_model / SAVED_MODEL_FILENAME
    if unsafe:
        message = (
            f"serving {root / saved_model} with unsafe=True although the graph scan refuses it: "
            f"{findings[0]}"
        )
        log.warning(message)
        warnings.warn(message, UnsafeLoadWarning, stacklevel=4)
        return
    more = len(findings) - 1
    raise UnsafeBundleError(
        f"the SavedModel graph is not served: {findings[0]}"
        + (f" (and {more} more)" if more else "")
        + "; load with unsafe=True only if you made it",
        path=where,
        details=list(findings[1:MAX_REPORTED]),
    )


def check_export(
    root: Path, saved_model: str, files: Collection[str], manifest: Path
) -> list[dict[str, object]]:
    """The build's scan of the SavedModel it exported: the lock's ``op_libraries`` records, or a
    BuildError naming the first op verify would refuse (a bundle that fails its own verify is
    never written); ``manifest`` is what the error names."""
    verdict = scan_saved_model(root, saved_model, files, None)
    if verdict.findings:
        more = len(verdict.findings) - 1
        raise BuildError(
            f"the exported SavedModel would fail 'bundle verify' under every policy: "
            f"{verdict.findings[0]}" + (f" (and {more} more)" if more else "") + "; bundler "
            "serves only graphs it can judge (docs/graph-safety.md lists the ops it allows, "
            "and how to ask for another): leave the layer that adds the op out of the model",
            path=manifest,
            field="model.factory",
            details=list(verdict.findings[1:MAX_REPORTED]),
        )
    return locked_records(verdict.libraries)


class GraphScan:
    """Verify's graph scan, run on the bytes of ``saved_model.pb`` as they are hashed.

    ``consumers()`` goes to the files check (``digest.check_digests``), which hands the file's
    bytes here once they match the lock, on a hashing worker, while the other workers hash the
    large files; ``problems()`` then reports the verdict. A file too large to be handed over whole
    (or sharded) is read and scanned after hashing instead.
    """

    def __init__(self, root: Path, lock: Lock) -> None:
        self.root = root
        self.saved_model = lock.artifacts.saved_model
        self.path = f"{self.saved_model}/{SAVED_MODEL_FILENAME}"
        self.files = lock.files
        self.libraries = lock_libraries(lock)
        self.verdict: GraphVerdict | None = None

    def consumers(self) -> dict[str, Callable[[bytes], None]]:
        entry = self.files.get(self.path)
        if entry is None or entry.shards is not None or entry.size > SAVED_MODEL_MAX_BYTES:
            return {}
        return {self.path: self._judge}

    def _judge(self, data: bytes) -> None:
        self.verdict = judge_saved_model(data, self.saved_model, self.files, self.libraries)

    def problems(self, earlier: Iterable[Problem]) -> list[Problem]:
        """The findings as Problems (kind ``unsafe``), at most ``MAX_REPORTED`` of them; none
        when an earlier problem is about ``saved_model.pb`` (missing, changed): that one already
        says the bundle is not what its lock describes."""
        if self.path not in self.files or any(p.path == self.path for p in earlier):
            return []
        verdict = self.verdict
        if verdict is None:
            verdict = scan_saved_model(self.root, self.saved_model, self.files, self.libraries)
        findings = verdict.findings
        problems = [Problem(self.path, "unsafe", finding) for finding in findings[:MAX_REPORTED]]
        if len(findings) > MAX_REPORTED:
            problems.append(
                Problem(
                    self.path, "unsafe", f"... and {len(findings) - MAX_REPORTED} more unsafe ops"
                )
            )
        return problems
