"""``bundle build``, ``verify``, ``inspect``, ``schema`` and ``env``: a bundle folder, rendered.

Each command makes one API call (``build_bundle``, ``verify_bundle``, ``inspect_bundle``, ...)
and prints what it returns: as text for people, or with ``--json`` as the result's own
``to_json()`` document. Nothing here decides whether a bundle is good; it only says so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from bundler.cli.terminal import (
    Progress,
    Style,
    display_path,
    human_size,
    import_tensorflow_quietly,
    plan_lines,
    print_json,
)
from bundler.errors import BuildWarning, SignatureError, UsageError
from bundler.text import shown

if TYPE_CHECKING:
    from bundler.build.rehearsal.run import RehearsalReport
    from bundler.lock.model import Rehearsal


def run_build(args: argparse.Namespace) -> int:
    """``bundle build``: build, then print the bundle's digest (and the reproducibility check)."""
    from bundler.build.pipeline import build_bundle, default_output
    from bundler.build.preflight import check_build_inputs

    style = Style(sys.stderr)
    quiet = args.json or not sys.stderr.isatty()
    started = time.perf_counter()

    def stage(text: str) -> None:
        if not quiet:
            sys.stderr.write(style.dim(f"  {text}...") + "\n")

    from bundler.build.rehearsal.run import Rehearsal
    from bundler.frameworks.installed import require_tensorflow
    from bundler.manifest.reader import read_manifest

    source = read_manifest(args.manifest)  # bad input fails fast, before TensorFlow loads
    target = Path(args.output) if args.output is not None else default_output(source.manifest)
    check_build_inputs(source, Path(os.path.abspath(target)), args.force)
    require_tensorflow("building a bundle")
    # the rehearsal's interpreter starts first: its TensorFlow import overlaps ours
    rehearsal = Rehearsal.start(source) if args.rehearse else None
    try:
        if not args.debug:
            stage("importing TensorFlow")
            import_tensorflow_quietly()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BuildWarning)  # shown below, as the build's notes
            bundle = build_bundle(
                source,
                args.output,
                force=args.force,
                rehearse=rehearsal or False,
                on_stage=stage,
                on_hashing=lambda total: Progress("  hashing", total, enabled=not quiet),
            )
    finally:
        if rehearsal is not None:
            rehearsal.close()  # the build closed it, unless it never started
    seconds = time.perf_counter() - started
    total = bundle.lock.total_size
    check = None
    if args.check_reproducible:
        from bundler.build.reproducible import check_reproducible

        stage("building again in a fresh process")
        check = check_reproducible(args.manifest, bundle.path)
    if args.json:
        document = {**bundle.to_json(), "seconds": round(seconds, 3)}
        if check is not None:
            document["reproducible"] = check.to_json()
        print_json(document)
    else:
        print(
            f"built {shown(display_path(bundle.path))}  {bundle.lock.name} {bundle.lock.version}  "
            f"{bundle.digest}  ({len(bundle.lock.files)} files, {human_size(total)}, "
            f"{seconds:.1f} s)"
        )
        print(f"  {rehearsal_line(bundle.rehearsal)}", file=sys.stderr)
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
                from bundler.cli.diff import diff_lines

                print("\n".join(diff_lines(check.differences, skip=("identity",))[2:]))
    return 1 if check is not None and not check.reproducible else 0


def rehearsal_line(report: RehearsalReport) -> str:
    """What ``bundle build`` says about its rehearsal, beside the result."""
    if not report.rehearsed:
        return "not rehearsed (--no-rehearse): no fresh interpreter loaded it; the lock says so"
    examples = f"{report.examples} golden example{'' if report.examples == 1 else 's'}"
    return (
        f"rehearsed: a fresh interpreter loaded it and replayed {examples} "
        f"({report.seconds or 0:.1f} s, of which the build waited {report.waited or 0:.1f} s)"
    )


def lock_rehearsal_line(rehearsal: Rehearsal) -> str:
    """What a lock says of its build's rehearsal, for ``inspect`` (and ``verify``, when not)."""
    if not rehearsal.rehearsed:
        return (
            "not rehearsed: built with --no-rehearse, so no fresh interpreter loaded it before "
            "it was put in place"
        )
    examples = f"{rehearsal.examples} golden example{'' if rehearsal.examples == 1 else 's'}"
    return f"rehearsed: a fresh interpreter loaded it at build and replayed {examples}"


def run_verify(args: argparse.Namespace) -> int:
    """``bundle verify``: the report as text, or as one JSON verdict, even when the signature
    check fails (the gate reading the document needs the verdict; the error line says it too)."""
    from bundler.load.smoke import verify_bundle
    from bundler.verify.lock_reader import bundle_root, pinned_digest

    style = Style(sys.stdout)
    digest = pinned_digest(args.digest, "--digest")
    root = bundle_root(args.bundle)
    unsigned: SignatureError | None = None
    if args.key:
        from bundler.trust.signing import verify_signature

        try:
            verify_signature(root, [args.key])
        except SignatureError as error:
            if not args.json:
                raise
            unsigned = error  # the verdict below carries it; the error line follows it
    smoke = args.smoke and unsigned is None  # never run the model of an untrusted bundle
    if smoke and not args.debug:
        import_tensorflow_quietly()
    report = verify_bundle(
        root,
        policy=args.policy,
        smoke=smoke,
        env=args.env,
        on_hashing=lambda total: Progress("verifying", total, enabled=not args.json),
        digest=digest,
    )
    if args.json:
        if unsigned is not None:
            from bundler.trust.signing import signature_problem

            report = replace(report, problems=(signature_problem(root, unsigned), *report.problems))
        document = report.to_json()
        if args.key:
            document["signature"] = "invalid" if unsigned else "valid"
        print_json(document)
        if unsigned is not None:
            raise unsigned
        return 0 if report.ok else 1
    lock = report.lock
    head = shown(f"{lock.name} {lock.version}") if lock else ""
    where = shown(display_path(root))
    if report.ok:
        print(
            f"{style.ok('OK')}  {where}  {head}  {report.digest}\n"
            f"    {report.files_checked} files, {human_size(report.bytes_hashed)} verified in "
            f"{report.seconds:.2f} s"
        )
        if args.key:
            print(f"    signature: valid ({shown(args.key)})")
    else:
        print(f"{style.bad('FAILED')}  {where}  {head}")
        for problem in report.problems:
            if problem.kind == "incompatible":
                continue  # printed with the plan below
            print(f"  {style.bad('x')} {shown(problem)}")
    if report.plan is not None:
        plan = report.plan
        where = "here" if plan.environment == "local" else f"on {shown(plan.environment)}"
        print(f"\n  load plan {where}, policy '{plan.policy}': {plan.outcome}")
        if plan.mode != "keras":
            print(f"  why: {shown(plan.reason)}")
        print("\n" + "\n".join("    " + line for line in plan_lines(plan)))
        for note in plan.notes:
            print(f"\n  note: {shown(note)}")
        if plan.mode == "refused":
            remedies = [shown(remedy) for remedy in plan.remedies()]
            if remedies:
                print("\n  to load it: " + ("\n              ".join(remedies)))
    if lock is not None and lock.rehearsal is not None and not lock.rehearsal.rehearsed:
        print(f"\n  note: {lock_rehearsal_line(lock.rehearsal)}")
    for result in report.smoke:
        mark = style.ok("ok") if result.get("ok") else style.bad("drifted")
        diff = result.get("max_abs_diff")
        extra = f" (max abs diff {diff:.2g}, {result.get('mode')} path)" if diff is not None else ""
        print(f"  example {shown(result['name'])}: {mark}{extra}")
    return 0 if report.ok else 1


def run_inspect(args: argparse.Namespace) -> int:
    """``bundle inspect``: ``inspect_bundle``'s report, as text or as its JSON document."""
    from bundler.verify.inspection import inspect_bundle

    report = inspect_bundle(args.bundle)
    if args.json:
        print_json(report.to_json())
        return 0
    lock = report.lock
    env = {key: shown(value) for key, value in lock.environment.to_dict().items()}
    print(
        shown(f"{lock.name} {lock.version}")
        + (f" - {shown(lock.description)}" if lock.description else "")
    )
    covers = "" if lock.digest_covers == "lock" else f"  (of the files only: a {lock.format} lock)"
    print(f"  digest   {lock.digest}{covers}")
    print(f"  created  {shown(lock.created)}  with bundler {env['bundler']}")
    print(
        f"  built on python {env['python']}, tensorflow {env['tensorflow']}, keras {env['keras']}, "
        f"numpy {env['numpy']}, {env['platform']}"
    )
    if lock.rehearsal is not None:
        print(f"  {lock_rehearsal_line(lock.rehearsal)}")
    for problem in report.problems:
        print(f"  warning: {shown(problem)}")
    print("\ncomponents (pinned vs installed here):")
    print("\n".join("  " + line for line in plan_lines(report.plan)))
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
    print(f"\nfiles ({len(lock.files)}, {human_size(lock.total_size)}):")
    names = {name: shown(name) for name in lock.files}
    width = max((len(name) for name in names.values()), default=0)
    for name, entry in sorted(lock.files.items()):
        print(f"  {names[name].ljust(width)}  {human_size(entry.size):>9}  {entry.sha256[:12]}")
    return 0


def run_schema(args: argparse.Namespace) -> int:
    """``bundle schema``: the checked-in JSON Schema of the manifest or the lock."""
    from bundler.schema import checked_in

    sys.stdout.write(checked_in(args.which))
    return 0


def run_env(args: argparse.Namespace) -> int:
    """``bundle env``: this environment as ``name==version`` lines, for ``verify --env``."""
    from bundler.compat.environments import describe_environment

    lock = None
    if args.bundle:
        from bundler.verify.lock_reader import bundle_root, read_lock

        lock, problems = read_lock(bundle_root(args.bundle))
        if lock is None:
            raise UsageError("; ".join(p.message for p in problems), path=args.bundle)
    for line in describe_environment(lock):
        print(shown(line))
    return 0
