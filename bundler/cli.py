"""The ``bundle`` command: argument parsing and printing only; every verb is one API call.

Exit codes: 0 success, 1 the operation failed (a damaged or incompatible bundle, a failed build),
2 bad input (a bad manifest, a path that is not a bundle, a wrong option). User mistakes print one
clear line (plus details) on stderr, never a traceback unless ``--debug``.

Text output shows data from bundles and registries (names, paths, messages that quote them)
through ``bundler.text.shown``, so terminal escapes and bidi overrides in them are printed as
visible escapes; ``--json`` output is exact (``json`` escapes them itself), and strict (no NaN).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from . import __version__
from .errors import BuildWarning, BundleError, UsageError
from .text import shown

PROG = "bundle"
EXAMPLES = """\
examples:
  bundle build example_bundles/custom_layer/manifest.yaml -o bundles/regressor
  bundle verify bundles/regressor                  # integrity + will it load here?
  bundle verify bundles/regressor --env prod.txt   # ... on the target described by prod.txt
  bundle verify bundles/regressor --smoke          # ... and replay the golden examples
  bundle inspect bundles/regressor
  bundle env > prod.txt                            # run on the deploy target
  bundle push bundles/regressor oci://registry.example.com/ml/regressor
  bundle pull oci://registry.example.com/ml/regressor@sha256:... -o bundles/regressor

exit codes: 0 ok, 1 failed (damaged, incompatible, build failed), 2 bad input
"""


class _Style:
    """Colour on a terminal only, and never when NO_COLOR is set."""

    def __init__(self, stream: TextIO) -> None:
        self.enabled = (
            stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
        )

    def __call__(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.enabled else text

    def ok(self, text: str) -> str:
        return self(text, "32;1")

    def bad(self, text: str) -> str:
        return self(text, "31;1")

    def dim(self, text: str) -> str:
        return self(text, "2")


def _size(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"


class _Progress:
    """Bytes hashed, on one rewritten stderr line, for big bundles on a terminal only.

    Big means ``BUNDLER_PROGRESS_MIN_BYTES`` (default 200 MB): small bundles hash in a blink.
    """

    def __init__(self, label: str, total: int, enabled: bool) -> None:
        self.label = label
        self.total = total
        self.done = 0
        try:
            threshold = int(os.environ.get("BUNDLER_PROGRESS_MIN_BYTES", 200_000_000))
        except ValueError:
            threshold = 200_000_000
        self.enabled = enabled and total >= threshold and sys.stderr.isatty()
        self.started = time.perf_counter()
        self.shown = 0.0

    def __call__(self, count: int) -> None:
        self.done += count  # a race between threads only skews the display, never the result
        now = time.perf_counter()
        if self.enabled and now - self.shown > 0.1:
            self.shown = now
            rate = self.done / max(now - self.started, 1e-9)
            sys.stderr.write(
                f"\r{self.label}: {_size(self.done)} / {_size(self.total)} ({_size(rate)}/s)   "
            )
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 70 + "\r")
            sys.stderr.flush()


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities (a drifted example's difference) as null: not JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _print_json(document: Any) -> None:
    json.dump(_finite(document), sys.stdout, indent=2, sort_keys=False, allow_nan=False)
    sys.stdout.write("\n")


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with file descriptor 2 closed off: its C++ start-up log lines are written
    before any log level applies. CLI only; a library must not swallow a service's stderr."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        try:
            import keras  # noqa: F401
            import tensorflow  # noqa: F401
        except ImportError:
            pass  # the API reports a missing TensorFlow with its own clear error
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


# -- verbs ----------------------------------------------------------------------------------------


def _cmd_build(args: argparse.Namespace) -> int:
    from .build import build_bundle

    style = _Style(sys.stderr)
    quiet = args.json or not sys.stderr.isatty()
    started = time.perf_counter()

    def stage(text: str) -> None:
        if not quiet:
            sys.stderr.write(style.dim(f"  {text}...") + "\n")

    from .manifest import read_manifest

    source = read_manifest(args.manifest)  # bad input fails fast, before TensorFlow loads
    if not args.debug:
        stage("importing TensorFlow")
        _import_tensorflow_quietly()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BuildWarning)  # shown below, as the build's notes
        bundle = build_bundle(
            source,
            args.output,
            force=args.force,
            on_stage=stage,
            on_hashing=lambda total: _Progress("  hashing", total, enabled=not quiet),
        )
    seconds = time.perf_counter() - started
    total = sum(entry.size for entry in bundle.lock.files.values())
    check = None
    if args.check_reproducible:
        from .reproducible import check_reproducible

        stage("building again in a fresh process")
        check = check_reproducible(args.manifest, bundle.path)
    if args.json:
        document = {
            "bundle": str(bundle.path),
            "name": bundle.lock.name,
            "version": bundle.lock.version,
            "digest": bundle.digest,
            "files": len(bundle.lock.files),
            "bytes": total,
            "seconds": round(seconds, 3),
            "notes": list(bundle.notes),
        }
        if check is not None:
            document["reproducible"] = check.to_json()
        _print_json(document)
    else:
        print(
            f"built {shown(_display_path(bundle.path))}  {bundle.lock.name} {bundle.lock.version}  "
            f"{bundle.digest}  ({len(bundle.lock.files)} files, {_size(total)}, {seconds:.1f} s)"
        )
        for note in bundle.notes:  # what the build decided on its own: beside the result
            print(f"  {shown(note)}", file=sys.stderr)
        if check is not None and check.reproducible:
            print("reproducible: a second build in a fresh process gave the same digest")
        elif check is not None:
            print(
                f"NOT reproducible: a second build in a fresh process gave {check.second_digest}"
                "\n(is the factory seeded? keras.utils.set_random_seed(...) before making the "
                "model)"
            )
            if check.differences is not None:
                print("\n".join(_diff_lines(check.differences, skip=("identity",))[2:]))
    return 1 if check is not None and not check.reproducible else 0


def _display_path(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def _cmd_verify(args: argparse.Namespace) -> int:
    from .smoke import verify_bundle
    from .verify import bundle_root, pinned_digest

    style = _Style(sys.stdout)
    digest = pinned_digest(args.digest, "--digest")
    root = bundle_root(args.bundle)
    if args.smoke and not args.debug:
        _import_tensorflow_quietly()
    if args.key:
        from .signing import verify_signature

        verify_signature(root, [args.key])
    report = verify_bundle(
        root,
        policy=args.policy,
        smoke=args.smoke,
        env=args.env,
        on_hashing=lambda total: _Progress("verifying", total, enabled=not args.json),
        digest=digest,
    )
    signed_by = "signature: valid" if args.key else None
    if args.json:
        document = report.to_json()
        if signed_by:
            document["signature"] = "valid"
        _print_json(document)
        return 0 if report.ok else 1
    lock = report.lock
    head = shown(f"{lock.name} {lock.version}") if lock else ""
    where = shown(_display_path(root))
    if report.ok:
        print(
            f"{style.ok('OK')}  {where}  {head}  {report.digest}\n"
            f"    {report.files_checked} files, {_size(report.bytes_hashed)} verified in "
            f"{report.seconds:.2f} s"
        )
        if signed_by:
            print(f"    {signed_by} ({shown(args.key)})")
    else:
        print(f"{style.bad('FAILED')}  {where}  {head}")
        for problem in report.problems:
            if problem.kind == "incompatible":
                continue  # printed with the plan below
            print(f"  {style.bad('x')} {shown(problem)}")
    if report.plan is not None:
        plan = report.plan
        mode = {
            "keras": "loads the Keras model",
            "graph": "serves the SavedModel graph",
            "refused": "REFUSES to load",
        }[plan.mode]
        where = "here" if plan.environment == "local" else f"on {plan.environment}"
        print(f"\n  load plan {where}, policy '{plan.policy}': {mode}")
        if plan.mode != "keras":
            print(f"  why: {shown(plan.reason)}")
        print("\n" + "\n".join("    " + line for line in _table(plan)))
        if plan.mode == "refused":
            remedies = [shown(remedy) for remedy in plan.remedies()]
            if remedies:
                print("\n  to load it: " + ("\n              ".join(remedies)))
    for result in report.smoke:
        mark = style.ok("ok") if result.get("ok") else style.bad("drifted")
        diff = result.get("max_abs_diff")
        extra = f" (max abs diff {diff:.2g}, {result.get('mode')} path)" if diff is not None else ""
        print(f"  example {shown(result['name'])}: {mark}{extra}")
    return 0 if report.ok else 1


def _table(plan: Any) -> list[str]:
    """The plan's table, its lines escaped one by one (the cells quote the lock's versions)."""
    return [shown(line) for line in plan.table().splitlines()]


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .compat import make_plan
    from .environments import StaticEnvironment
    from .verify import bundle_root, read_lock

    root = bundle_root(args.bundle)
    lock, problems = read_lock(root)
    if lock is None:
        raise UsageError(
            "cannot be inspected: " + "; ".join(p.message for p in problems),
            path=root / "bundle.lock.json",
        )
    plan = make_plan(lock, "adapt", StaticEnvironment())
    if args.json:
        _print_json(
            {
                "bundle": str(root),
                "name": lock.name,
                "version": lock.version,
                "description": lock.description,
                "digest": lock.digest,
                "created": lock.created,
                "environment": lock.environment.to_dict(),
                "components": [component.to_dict() for component in lock.components],
                "plan": plan.to_json(),
                "metadata": lock.metadata,
                "examples": [example.to_dict() for example in lock.examples],
                "files": lock.files_table(),
                "lock_problems": [p.to_json() for p in problems],
            }
        )
        return 0
    env = {key: shown(value) for key, value in lock.environment.to_dict().items()}
    print(
        shown(f"{lock.name} {lock.version}")
        + (f" - {shown(lock.description)}" if lock.description else "")
    )
    print(f"  digest   {lock.digest}")
    print(f"  created  {shown(lock.created)}  with bundler {env['bundler']}")
    print(
        f"  built on python {env['python']}, tensorflow {env['tensorflow']}, keras {env['keras']}, "
        f"numpy {env['numpy']}, {env['platform']}"
    )
    if problems:
        for problem in problems:
            print(f"  warning: {shown(problem)}")
    print("\ncomponents (pinned vs installed here):")
    print("\n".join("  " + line for line in _table(plan)))
    for component in lock.components:
        used = ", ".join(component.objects) or "none of its objects"
        print(shown(f"  the model uses from {component.module}: {used}"))
        for path, digest in sorted(component.sources.items()):
            print(shown(f"    source {path}  {digest[:12]}"))
    if lock.metadata:
        print("\nmetadata:")
        for line in json.dumps(lock.metadata, indent=2, sort_keys=True).splitlines()[1:-1]:
            print(line)
    if lock.examples:
        print("\nexamples:")
        for example in lock.examples:
            print(f"  {shown(example.name)}: rtol {example.rtol:g}, atol {example.atol:g}")
    print(f"\nfiles ({len(lock.files)}, {_size(lock.total_size)}):")
    names = {name: shown(name) for name in lock.files}
    width = max((len(name) for name in names.values()), default=0)
    for name, entry in sorted(lock.files.items()):
        print(f"  {names[name].ljust(width)}  {_size(entry.size):>9}  {entry.sha256[:12]}")
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    from .schema import checked_in

    sys.stdout.write(checked_in(args.which))
    return 0


def _cmd_env(args: argparse.Namespace) -> int:
    from .environments import describe_environment

    lock = None
    if args.bundle:
        from .verify import bundle_root, read_lock

        lock, problems = read_lock(bundle_root(args.bundle))
        if lock is None:
            raise UsageError("; ".join(p.message for p in problems), path=args.bundle)
    for line in describe_environment(lock):
        print(shown(line))
    return 0


def _cmd_keygen(args: argparse.Namespace) -> int:
    from .signing import keygen

    private, public = keygen(args.output, force=args.force, type=args.type)
    print(f"wrote {private} (keep it secret) and {public} (give it to verifiers)")
    return 0


def _cmd_sign(args: argparse.Namespace) -> int:
    from .signing import sign_bundle

    signature = sign_bundle(args.bundle, args.key, format=args.format)
    print(f"signed {shown(args.bundle)}: {signature}")
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from .oci import push

    result = push(args.bundle, args.reference, insecure=args.insecure, format=args.format)
    if args.json:
        _print_json(result)
    else:
        signed = f", signed by {result['signed_by']}" if result["signed_by"] else ""
        print(
            f"pushed {shown(args.bundle)} to {result['tag']}  ({result['files']} files, "
            f"{_size(result['bytes'])}{signed})\n  {result['reference']}"
        )
    return 0


def _cmd_pull(args: argparse.Namespace) -> int:
    from .oci import fetch, pull_to

    started = time.perf_counter()
    keys = [args.key] if args.key else None
    if args.output:
        path, fetched = pull_to(
            args.reference, args.output, insecure=args.insecure, force=args.force, trusted_keys=keys
        )
    else:
        path, fetched = fetch(args.reference, insecure=args.insecure, trusted_keys=keys)
    seconds = time.perf_counter() - started
    if args.json:
        _print_json(
            {
                "reference": args.reference,
                "path": str(path),
                "downloaded": fetched,
                "signature": "valid" if keys else None,
                "seconds": round(seconds, 3),
            }
        )
    else:
        how = "downloaded and verified" if fetched else "from the cache"
        signed = ", signature valid" if keys else ""
        print(
            f"pulled {shown(args.reference)} -> {shown(_display_path(path))}  "
            f"({how}{signed}, {seconds:.2f} s)"
        )
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        from .serve import serve
    except ImportError as error:
        if (error.name or "").startswith("bundler"):
            raise
        raise UsageError(
            "bundle serve needs the 'serve' extra: pip install 'bundler[serve]'"
        ) from None
    if args.watch is not None and args.watch <= 0:
        raise UsageError("--watch takes a number of seconds above 0", value=args.watch)
    if not args.debug:
        _import_tensorflow_quietly()
    serve(args.bundle, host=args.host, port=args.port, policy=args.policy, watch=args.watch)
    return 0


def _shown(value: Any, limit: int = 80) -> str:
    """A value read from a bundle, as one line of inert text: JSON, cut short, no control chars."""
    text = value if isinstance(value, str) and limit == 0 else None
    if text is None:
        text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
        if limit and len(text) > limit:
            text = text[: limit - 3] + "..."
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


def _name(text: str) -> str:
    return _shown(text, limit=0)


def _change_line(where: str, change: Any) -> str:
    if change.kind == "added":
        return f"  + {where}: {_shown(change.new)}"
    if change.kind == "removed":
        return f"  - {where}: {_shown(change.old)}"
    return f"  ~ {where}: {_shown(change.old)} -> {_shown(change.new)}"


def _shape(shape: Any) -> str:
    return "(" + ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


def _diff_lines(result: Any, skip: tuple[str, ...] = ()) -> list[str]:
    """``bundle diff`` as text: one line per difference, under the section it belongs to."""
    lines = []
    for mark, side in (("---", result.old), ("+++", result.new)):
        lines.append(
            f"{mark} {_name(side.label)}  {_name(side.name)} {_name(side.version)}  {side.digest}"
        )
    from .diff import SECTIONS

    sections: dict[str, list[str]] = {name: [] for name in SECTIONS}
    for section in ("identity", "components", "frameworks", "metadata"):
        sections[section] = [_change_line(_name(c.path), c) for c in getattr(result, section)]
    for entry in result.files:
        sizes = {
            "added": _size(entry.new_size or 0),
            "removed": _size(entry.old_size or 0),
            "changed": f"{_size(entry.old_size or 0)} -> {_size(entry.new_size or 0)}",
        }[entry.kind]
        sections["files"].append(f"  {_MARKS[entry.kind]} {_name(entry.path)}  {sizes}")
    for layer in result.config:
        if layer.kind != "changed":
            sections["config"].append(f"  {_MARKS[layer.kind]} {_name(layer.layer)}")
        for key in layer.keys:
            sections["config"].append(_change_line(f"{_name(layer.layer)} {_name(key.path)}", key))
    for weight in result.weights:
        where = f"{_name(weight.layer)}/{_name(weight.variable)}"
        if weight.kind == "added":
            text = f"  + {where} {_shape(weight.new_shape)}"
        elif weight.kind == "removed":
            text = f"  - {where} {_shape(weight.old_shape)}"
        elif weight.max_abs_diff is None:
            text = (
                f"  ~ {where}: {_shape(weight.old_shape)} {weight.old_dtype} -> "
                f"{_shape(weight.new_shape)} {weight.new_dtype}"
            )
        else:
            text = f"  ~ {where} {_shape(weight.old_shape)}: max abs diff {weight.max_abs_diff:.3g}"
            if weight.old_dtype != weight.new_dtype:
                text += f" ({weight.old_dtype} -> {weight.new_dtype})"
        sections["weights"].append(text)
    for example in result.examples:
        if example.kind != "changed":
            sections["examples"].append(f"  {_MARKS[example.kind]} {_name(example.name)}")
            continue
        parts = ["inputs changed"] if example.inputs_changed else []
        for drift in example.drift:
            if drift.kind == "changed" and drift.old is None:
                parts.append(f"{_name(drift.path)} drifted, max abs diff {drift.new:.3g}")
            else:
                parts.append(_change_line(f"{_name(drift.path)} shape", drift).strip()[2:])
        parts += [f"{c.path} {c.old:g} -> {c.new:g}" for c in example.tolerances]
        sections["examples"].append(f"  ~ {_name(example.name)}: " + "; ".join(parts))
    for name, entries in sections.items():
        if entries and name not in skip:
            lines.append(name)
            lines.extend(entries)
    return lines


_MARKS = {"added": "+", "removed": "-", "changed": "~"}


def _cmd_diff(args: argparse.Namespace) -> int:
    from .diff import diff_bundles

    try:
        result = diff_bundles(args.old, args.new)
    except BundleError as error:  # like diff(1): 2 for trouble, whatever the trouble was
        if args.debug:
            raise
        sys.stderr.write(f"{PROG}: error: {error}\n")
        return 2
    if args.json:
        _print_json(result.to_json())
    elif result.same:
        print(f"same  {_name(result.new.name)} {_name(result.new.version)}  {result.new.digest}")
    else:
        print("\n".join(_diff_lines(result)))
    return 0 if result.same else 1


# -- parser ---------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Build, verify and inspect Keras/TensorFlow model bundles: a checksummed "
        "folder with a .keras file, a SavedModel and a lock of pinned component versions.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND", required=True)

    build = verbs.add_parser(
        "build",
        help="build a bundle from a manifest, atomically",
        description="Import the components, call the model factory, write model.keras, a "
        "SavedModel and bundle.lock.json into a temporary folder, then rename it into place. "
        "A failed or interrupted build leaves nothing at OUT.",
    )
    build.add_argument("manifest", metavar="MANIFEST", help="manifest file (YAML or JSON)")
    build.add_argument(
        "-o", "--output", metavar="OUT", help="bundle folder (default bundles/NAME-VERSION)"
    )
    build.add_argument(
        "--force", action="store_true", help="replace OUT if it is a bundle (atomically)"
    )
    build.add_argument(
        "--check-reproducible",
        action="store_true",
        help="build a second time, in a fresh process, and fail (exit 1) naming what differs "
        "if the two bundles are not identical",
    )
    build.add_argument("--json", action="store_true", help="print the result as one JSON document")
    build.set_defaults(run=_cmd_build)

    verify = verbs.add_parser(
        "verify",
        help="check integrity and whether the bundle would load (no TensorFlow needed)",
        description="Check the lock against its schema and digest, every file's size and sha256, "
        "that nothing is missing, extra or a link, and the load plan for the installed (or "
        "--env) versions. Exit 0 ok, 1 not ok, 2 not a bundle.",
    )
    verify.add_argument("bundle", metavar="BUNDLE")
    verify.add_argument(
        "--policy",
        choices=("strict", "adapt", "fallback"),
        default="adapt",
        help="what load_bundle may do: strict = exact/compatible only; adapt "
        "(default) = also apply registered adapters; fallback = also serve the "
        "SavedModel graph",
    )
    verify.add_argument(
        "--env",
        metavar="FILE",
        help="plan for a target described by `pip freeze` "
        "output (name==version lines) instead of this machine",
    )
    verify.add_argument(
        "--smoke",
        action="store_true",
        help="also load the model here and replay its golden examples (imports TensorFlow)",
    )
    verify.add_argument("--key", metavar="PUBLIC.pem", help="require a valid signature by this key")
    verify.add_argument(
        "--digest",
        metavar="sha256:...",
        help="require this very bundle: any other, signed or not, fails (rollback, substitution)",
    )
    verify.add_argument("--json", action="store_true", help="print one JSON document")
    verify.set_defaults(run=_cmd_verify)

    inspect = verbs.add_parser("inspect", help="show what is inside a bundle, at a glance")
    inspect.add_argument("bundle", metavar="BUNDLE")
    inspect.add_argument("--json", action="store_true", help="print one JSON document")
    inspect.set_defaults(run=_cmd_inspect)

    schema = verbs.add_parser("schema", help="print the JSON Schema of the manifest or the lock")
    schema.add_argument("which", choices=("manifest", "lock"))
    schema.set_defaults(run=_cmd_schema)

    env = verbs.add_parser(
        "env",
        help="print this environment as name==version lines (for verify --env)",
        description="Print installed distributions as name==version lines, the format "
        "`bundle verify --env FILE` reads. Run it on the deploy target.",
    )
    env.add_argument(
        "--bundle",
        metavar="BUNDLE",
        help="also list the bundle's components found on sys.path without a distribution, "
        "and the adapters their code declares (so verify --env can predict adapted loads)",
    )
    env.set_defaults(run=_cmd_env)

    push = verbs.add_parser(
        "push",
        help="verify a bundle, then push it to an OCI registry",
        description="Verify BUNDLE, then push it as an OCI artifact, one layer per file: a CNCF "
        "ModelPack artifact (the lock one of its layers) by default, or with --format bundler "
        "bundler's own (the lock as config). Prints the manifest digest to pull or deploy "
        "by. Needs the oci extra: "
        "pip install 'bundler[oci]'. Credentials: BUNDLER_REGISTRY_USERNAME/PASSWORD, or "
        "docker's config.json ($DOCKER_CONFIG or ~/.docker).",
    )
    push.add_argument("bundle", metavar="BUNDLE")
    push.add_argument(
        "reference", metavar="oci://HOST[:PORT]/REPO[:TAG]", help="tag defaults to the version"
    )
    push.add_argument(
        "--insecure", action="store_true", help="plain HTTP (always for localhost registries)"
    )
    push.add_argument(
        "--format",
        choices=("modelpack", "bundler"),
        default="modelpack",
        help="artifact format (default: modelpack; bundle pull reads both)",
    )
    push.add_argument("--json", action="store_true", help="print one JSON document")
    push.set_defaults(run=_cmd_push)

    pull = verbs.add_parser(
        "pull",
        help="fetch a bundle from an OCI registry into the cache (and -o DIR)",
        description="Fetch the bundle at REFERENCE into the content-addressed cache "
        "($BUNDLER_CACHE, default ~/.cache/bundler), checking every blob's digest and verifying "
        "the bundle before it is used; with -o, also copy it to DIR. A digest already in the "
        "cache is not fetched again.",
    )
    pull.add_argument("reference", metavar="oci://HOST[:PORT]/REPO[:TAG|@sha256:...]")
    pull.add_argument("-o", "--output", metavar="DIR", help="also place the bundle at DIR")
    pull.add_argument("--force", action="store_true", help="replace an existing bundle at DIR")
    pull.add_argument("--insecure", action="store_true", help="plain HTTP")
    pull.add_argument(
        "--key", metavar="PUBLIC.pem", help="require a valid signature by this key (pushed with it)"
    )
    pull.add_argument("--json", action="store_true", help="print one JSON document")
    pull.set_defaults(run=_cmd_pull)

    serve = verbs.add_parser(
        "serve",
        help="serve bundles over HTTP (KServe's model server), reloading them safely on SIGHUP",
        description="""\
Serve each BUNDLE under its lock's name with KServe's model server:
  GET  /v2/health/ready               ready once every bundle is verified and loaded
  GET  /v2/models/NAME                inputs, outputs, version, digest
  POST /v2/models/NAME/infer          Open Inference Protocol (v2)
  POST /v1/models/NAME:predict        {"instances": [...]} in, {"predictions": [...]} out

A bundle is served only once it is verified, planned, loaded and has replayed its golden
examples; one that cannot be served stops the start with the reason (exit 1).

On SIGHUP each BUNDLE path is resolved again (a 'current -> v3' symlink is the usual
deploy) and the bundle it names is loaded beside the serving one, the same way. It replaces
the old one only if it passes everything; otherwise the old one keeps serving and the log
says why, in the words of `bundle verify`. Requests are answered throughout.

Needs the serve extra: pip install 'bundler[serve]'.""",
        epilog="examples:\n"
        "  bundle serve bundles/current                    # http://127.0.0.1:8080\n"
        "  ln -sfn v4 bundles/current.new && mv -T bundles/current.new bundles/current\n"
        "  kill -HUP PID                                   # verify v4, then swap\n"
        "  bundle serve /mnt/models/current --host 0.0.0.0 --watch 10   # in a container",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("bundle", metavar="BUNDLE", nargs="+", help="bundle folders (or symlinks)")
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: %(default)s, this machine only; 0.0.0.0 exposes "
        "the models to the network, with no authentication)",
    )
    serve.add_argument("--port", type=int, default=8080, help="HTTP port (default: %(default)s)")
    serve.add_argument(
        "--policy",
        choices=("strict", "adapt", "fallback"),
        default="adapt",
        help="load policy, at start and on every reload (default: %(default)s)",
    )
    serve.add_argument(
        "--watch",
        type=float,
        metavar="SECONDS",
        help="also poll every SECONDS and reload when a BUNDLE path names another bundle (a new "
        "symlink target or lock digest): for platforms without SIGHUP",
    )
    serve.set_defaults(run=_cmd_serve)
    diff = verbs.add_parser(
        "diff",
        help="show what changed between two bundles",
        description="Compare two bundles (folders or oci:// references) section by section: "
        "identity, components, frameworks, files, model config by layer, weights by layer and "
        "variable, metadata by key path, golden examples. Needs no TensorFlow. Exit 0 same, "
        "1 different, 2 bad input.",
    )
    diff.add_argument("old", metavar="A", help="bundle folder or oci:// reference")
    diff.add_argument("new", metavar="B", help="bundle folder or oci:// reference")
    diff.add_argument("--json", action="store_true", help="print one JSON document")
    diff.set_defaults(run=_cmd_diff)

    sign = verbs.add_parser("sign", help="sign a bundle's digest with a private key")
    sign.add_argument("bundle", metavar="BUNDLE")
    sign.add_argument("--key", metavar="PRIVATE.pem", required=True)
    sign.add_argument(
        "--format",
        choices=("bundler", "openssf"),
        default="bundler",
        help="bundle.sig.json with an Ed25519 key (default), or model.sig in the OpenSSF "
        "model-signing format with an EC P-256 key",
    )
    sign.set_defaults(run=_cmd_sign)

    keygen = verbs.add_parser("keygen", help="create a key pair for signing")
    keygen.add_argument(
        "-o",
        "--output",
        metavar="PREFIX",
        default="bundle-key",
        help="writes PREFIX.pem (private) and PREFIX.pub.pem (public)",
    )
    keygen.add_argument(
        "--type",
        choices=("ed25519", "ec-p256"),
        default="ed25519",
        help="ed25519 for bundle sign (default), ec-p256 for bundle sign --format openssf",
    )
    keygen.add_argument("--force", action="store_true", help="overwrite existing key files")
    keygen.set_defaults(run=_cmd_keygen)
    return parser


def _error_text(error: BundleError) -> str:
    """The error as text, escaped: its message may be a table (newlines kept), each detail is
    one line (a newline in a quoted file name is escaped, so it cannot fake a line of ours)."""
    head = BundleError(error.message, path=error.path, field=error.field)
    return "\n".join([shown(head, lines=True), *(f"  {shown(line)}" for line in error.details)])


def _terminate(signum: int, frame: Any) -> None:
    # Turn SIGTERM into SystemExit so that `finally` blocks remove a build's temporary folder.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except BundleError as error:
        if args.debug:
            raise
        sys.stderr.write(f"{PROG}: error: {_error_text(error)}\n")
        return error.exit_code
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    except BrokenPipeError:
        return 1
    except Exception as error:
        if args.debug:
            raise
        sys.stderr.write(
            f"{PROG}: internal error: {type(error).__name__}: {shown(error, lines=True)}\n"
            f"  (this is a bug in bundler; run with --debug for the traceback)\n"
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
