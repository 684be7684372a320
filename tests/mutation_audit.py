"""The mutation audit: break one promise at a time and see that the tests named for it fail.

A test suite proves a promise only if breaking the code that keeps it fails a test. Each entry of
``MUTATIONS`` is one such break: the promise, one exact edit of one file (text that must occur
exactly once, and what it becomes) and the tests that must catch it. The audit copies the
repository (tracked files and new ones git does not ignore, as they are in the working tree) to a
scratch folder, checks that the named tests pass there unmutated, then applies each edit to the
scratch copy in turn, runs its tests in a fresh process and puts the file back. The working tree
is never written.

    .venv/bin/python -m tests.mutation_audit              # all (20 minutes on 2 busy cores)
    .venv/bin/python -m tests.mutation_audit NAME ...     # some of them
    .venv/bin/python -m tests.mutation_audit --list       # the names and promises

It prints one row per mutation: its name, the tests that failed (``caught by``), and ``SURVIVED``
when none did. It exits 1 when a mutation survived or an edit no longer applies (the code it
breaks has moved: update the entry), 2 when the named tests fail without any mutation.
docs/testing.md says when to run it and how to add an entry.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN_TIMEOUT = 3600  # seconds for one mutation's tests


@dataclass(frozen=True)
class Mutation:
    name: str
    promise: str
    file: str  # relative to the repository
    old: str  # occurs exactly once in the file
    new: str
    tests: tuple[str, ...]  # pytest node ids; every one must pass unmutated, one must fail


MUTATIONS = [
    Mutation(
        "scan-sibling-prefix",
        "a config may name only modules of the lock's components (acme covers acme.x, not "
        "acme_evil)",
        "bundler/scans/config.py",
        'any(module == m or module.startswith(m + ".") for m in allowed)',
        "any(module == m or module.startswith(m) for m in allowed)",
        ("tests/compat/test_component_boundary.py",),
    ),
    Mutation(
        "build-coverage-sibling-prefix",
        "the build refuses a model using objects no component covers",
        "bundler/scans/config.py",
        'matches = [c for c in components if module == c or module.startswith(c + ".")]',
        "matches = [c for c in components if module == c or module.startswith(c)]",
        (
            "tests/compat/test_component_boundary.py::"
            "test_the_build_refuses_a_model_using_a_sibling_prefix_module",
            "tests/compat/test_component_boundary.py::test_a_component_covers_itself_and_its_submodules_only",
        ),
    ),
    Mutation(
        "component-objects-sibling-prefix",
        "a component hands Keras only the objects its own modules registered",
        "bundler/compat/components.py",
        'return module == component or module.startswith(component + ".")',
        "return module == component or module.startswith(component)",
        (
            "tests/compat/test_component_boundary.py::"
            "test_a_component_hands_keras_only_the_objects_its_own_modules_registered",
            "tests/compat/test_component_boundary.py::test_a_component_covers_itself_and_its_submodules_only",
        ),
    ),
    Mutation(
        "replay-tolerance-x1000",
        "a golden replay is held to the tolerance the lock records",
        "bundler/load/golden.py",
        "np.allclose(got, want, rtol=example.rtol, atol=example.atol)",
        "np.allclose(got, want, rtol=example.rtol * 1000, atol=example.atol * 1000)",
        (
            "tests/compat/test_compat_matrix.py::"
            "test_a_replay_holds_the_outputs_to_the_tolerance_the_lock_records",
        ),
    ),
    Mutation(
        "pull-digest-unchecked",
        "a pull by digest refuses a manifest with another digest",
        "bundler/registry/pull.py",
        "if ref.digest and digest != ref.digest:",
        "if ref.digest and digest != digest:",
        (
            "tests/registry/test_registry_trust.py::"
            "test_a_pull_by_digest_refuses_a_manifest_with_another_digest",
        ),
    ),
    Mutation(
        "force-rebuilds-in-place",
        "--force swaps the new bundle in; OUT is never an incomplete folder",
        "bundler/build/pipeline.py",
        "        workdir = prepare_workdir(target, force)\n",
        "        if force and target.is_dir():\n"
        "            shutil.rmtree(target)\n"
        "        target.mkdir(parents=True)\n"
        "        workdir = target\n",
        ("tests/test_build_load.py::test_force_replaces_a_bundle_atomically",),
    ),
    Mutation(
        "lock-after-rename",
        "a build's folder is renamed into place only once its lock is in it",
        "bundler/build/pipeline.py",
        '            stage("installing")\n            install(workdir, target, force)\n',
        '            stage("installing")\n'
        '            (workdir / "bundle.lock.json").unlink()\n'
        "            install(workdir, target, force)\n"
        '            (target / "bundle.lock.json").write_bytes(lock.to_json())\n',
        (
            "tests/test_build_load.py::"
            "test_a_build_renames_its_folder_into_place_only_once_the_lock_is_in_it",
        ),
    ),
    Mutation(
        "file-sha256-unchecked",
        "verify refuses a file whose bytes are not the ones the lock hashed",
        "bundler/files/hashing.py",
        "        if result.sha256 != entry.sha256:\n",
        "        if result.sha256 != result.sha256:\n",
        (
            "tests/verify/test_verify.py::test_verify_names_the_damaged_file[flipped byte]",
            "tests/verify/test_verify.py::test_load_refuses_a_damaged_bundle[flipped byte]",
        ),
    ),
    Mutation(
        "lock-digest-unchecked",
        "verify refuses a lock whose fields or files table do not match its digest",
        "bundler/verify/lock_reader.py",
        "    if sealed != lock.digest:",
        "    if sealed == lock.digest[:0]:",
        (
            "tests/verify/test_verify.py::test_verify_names_the_damaged_file[edited lock entry]",
            "tests/verify/test_verify.py::"
            "test_verify_names_the_damaged_file[edited file and lock entry]",
        ),
    ),
    Mutation(
        "symlink-followed",
        "verify never follows a symlink in the bundle",
        "bundler/lock/paths.py",
        "info = item.stat(follow_symlinks=False)",
        "info = item.stat()",
        (
            "tests/verify/test_verify.py::test_verify_names_the_damaged_file[symlinked file]",
            "tests/verify/test_verify.py::test_verify_names_the_damaged_file[symlinked folder]",
        ),
    ),
    Mutation(
        "dotdot-path-allowed",
        "a lock path may not leave the bundle through '..'",
        "bundler/lock/paths.py",
        '    if ".." in parts:\n',
        '    if ".." in parts[1:]:\n',
        (
            "tests/verify/test_hostile_input.py::test_unsafe_lock_path_is_refused_by_name",
            "tests/verify/test_hostile_input.py::test_artifact_paths_outside_the_files_table_are_refused",
        ),
    ),
    Mutation(
        "lambda-unscanned",
        "verify and load refuse Lambda bytecode whatever Keras release enforces",
        "bundler/scans/config.py",
        'if obj["class_name"] == "__lambda__" and not unsafe:',
        'if obj["class_name"] == "__lambda" and not unsafe:',
        (
            "tests/load/test_safe_load.py::test_load_refuses_a_hostile_config_even_with_a_resealed_lock",
            "tests/load/test_safe_load.py::test_lambda_layer_is_refused_in_safe_mode",
        ),
    ),
    Mutation(
        "safe-mode-off",
        "Keras rebuilds the model with safe_mode on (weights read in place)",
        "bundler/load/keras.py",
        "                    safe_mode=not unsafe,\n                    before_weights=verified,\n",
        "                    safe_mode=False,\n                    before_weights=verified,\n",
        (
            "tests/load/test_safe_load.py::test_keras_rebuilds_the_model_in_safe_mode_unless_unsafe_is_asked",
            "tests/load/test_safe_load.py::test_lambda_layer_is_refused_in_safe_mode",
        ),
    ),
    Mutation(
        "safe-mode-off-through-keras",
        "Keras rebuilds the model with safe_mode on (archive read by keras.saving)",
        "bundler/load/keras.py",
        "stream, custom_objects=custom_objects, safe_mode=not unsafe",
        "stream, custom_objects=custom_objects, safe_mode=False",
        (
            "tests/load/test_safe_load.py::"
            "test_keras_rebuilds_the_model_in_safe_mode_unless_unsafe_is_asked",
        ),
    ),
    Mutation(
        "registry-lookup-unchecked",
        "load refuses an object registered in Keras by a module outside the lock",
        "bundler/scans/config.py",
        "            if not module_allowed(owner, allowed):\n",
        "            if not module_allowed(owner, [*allowed, owner]):\n",
        (
            "tests/load/test_safe_load.py::test_load_refuses_a_hostile_config_even_with_a_resealed_lock",
            "tests/compat/test_component_boundary.py::"
            "test_load_refuses_an_object_a_sibling_prefix_module_registered",
        ),
    ),
    Mutation(
        "tfsmlayer-allowed",
        "a config may not load a SavedModel from outside the bundle (TFSMLayer)",
        "bundler/scans/config.py",
        "for name in names & OUTSIDE_LOADERS.keys():",
        "for name in names & (OUTSIDE_LOADERS.keys() - {'TFSMLayer'}):",
        ("tests/scans/test_keras_holes.py::test_tfsm_layer_is_refused_where_keras_would_load_it",),
    ),
    Mutation(
        "json-duplicate-keys",
        "a lock or signature file with a key twice is refused",
        "bundler/strict_json.py",
        "        if key in result:\n",
        "        if key in result and key != key:\n",
        (
            "tests/verify/test_hostile_values.py::"
            "test_a_hostile_lock_value_is_one_problem_from_api_and_cli[duplicate key]",
            "tests/verify/test_hostile_values.py::test_duplicate_keys_in_a_signature_file_are_refused",
        ),
    ),
    Mutation(
        "zip-bomb-unbounded",
        "model.keras members may not inflate beyond a bound of the archive's size",
        "bundler/scans/keras_archive.py",
        "        if total > bound:\n",
        "        if total > bound * 1024:\n",
        ("tests/scans/test_keras_holes.py::test_a_zip_bomb_is_refused_before_it_is_read",),
    ),
    Mutation(
        "h5-links-unchecked",
        "the weights' HDF5 may not link outside itself or alias inside it",
        "bundler/scans/keras_archive.py",
        "        return None if link.type == h5l.TYPE_HARD else (raw, str(link.type))\n",
        "        return None\n",
        (
            "tests/scans/test_keras_holes.py::"
            "test_links_and_virtual_datasets_in_the_weights_are_refused[soft-link]",
            "tests/scans/test_keras_holes.py::"
            "test_links_and_virtual_datasets_in_the_weights_are_refused[external-link]",
        ),
    ),
    Mutation(
        "signature-unchecked",
        "a signature must verify under a trusted key",
        "bundler/trust/signing.py",
        '        key.verify(base64.b64decode(document["signature"]), canonical_json(statement))\n',
        '        base64.b64decode(document["signature"])\n',
        ("tests/trust/test_signing.py::test_forged_signature_is_refused",),
    ),
    Mutation(
        "registry-blob-unchecked",
        "a blob a registry serves must match its digest",
        "bundler/registry/client.py",
        'if received != size or "sha256:" + hasher.hexdigest() != digest:',
        "if received != size:",
        ("tests/registry/test_oci.py::test_a_tampered_blob_in_the_registry_is_refused",),
    ),
    Mutation(
        "missing-tool-skipped-in-ci",
        "under BUNDLER_TESTS_REQUIRE=all a missing tool fails the tests",
        "tests/conftest.py",
        '    if REQUIRE == "all":\n',
        '    if REQUIRE == "every":\n',
        ("tests/test_missing_tools.py::test_a_missing_tool_fails_the_tests_in_ci",),
    ),
]


def _files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    return [name for name in os.fsdecode(listed).split("\0") if name]


def copy_repository(scratch: Path) -> None:
    for name in _files():
        source = ROOT / name
        if not os.path.lexists(source):
            continue  # deleted in the working tree, not yet committed
        target = scratch / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)


def _environment(scratch: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    # the scratch copy's bundler, before the editable install that points at the working tree
    env["PYTHONPATH"] = os.pathsep.join([str(scratch), *filter(None, [env.get("PYTHONPATH")])])
    # a test skipped for a missing tool would pass for a mutation: it fails the baseline instead
    env.update(TF_CPP_MIN_LOG_LEVEL="3", PYTHONDONTWRITEBYTECODE="1", BUNDLER_TESTS_REQUIRE="all")
    return env


def check_imports(scratch: Path) -> None:
    found = subprocess.run(
        [sys.executable, "-c", "import bundler; print(bundler.__file__)"],
        cwd=scratch,
        env=_environment(scratch),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(found).resolve().is_relative_to(scratch.resolve()):
        raise SystemExit(f"the scratch copy imports bundler from {found}, not from {scratch}")


def failed_tests(scratch: Path, tests: tuple[str, ...]) -> list[str] | None:
    """The node ids of the named tests that failed or errored; None when the run timed out."""
    report = scratch / ".mutation-audit.xml"
    report.unlink(missing_ok=True)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    try:
        subprocess.run(
            [*command, f"--junitxml={report}", *tests],
            cwd=scratch,
            env=_environment(scratch),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=RUN_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return None
    if not report.is_file():
        return ["(pytest wrote no report)"]
    failed = []
    for case in ElementTree.parse(report).iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            module = case.get("classname", "").replace(".", "/")
            failed.append(f"{module}.py::{case.get('name')}".removeprefix("tests/"))
    return failed


def apply(scratch: Path, mutation: Mutation) -> str | None:
    """Apply the edit; the file's original text, or None when the edit no longer applies."""
    path = scratch / mutation.file
    original = path.read_text() if path.is_file() else ""
    if original.count(mutation.old) != 1:
        return None
    path.write_text(original.replace(mutation.old, mutation.new))
    return original


def _caught_by(failed: list[str]) -> str:
    return failed[0] + (f" (+{len(failed) - 1} more)" if len(failed) > 1 else "") if failed else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutation_audit", description=__doc__)
    parser.add_argument("names", nargs="*", help="mutations to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip running the tests unmutated first"
    )
    args = parser.parse_args(argv)
    if args.list:
        for mutation in MUTATIONS:
            print(f"{mutation.name:36} {mutation.file:26} {mutation.promise}")
        return 0
    chosen = [m for m in MUTATIONS if not args.names or m.name in args.names]
    unknown = set(args.names) - {m.name for m in MUTATIONS}
    if unknown:
        parser.error(f"no mutation named {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory(prefix="bundler-mutation-audit-") as folder:
        scratch = Path(folder)
        copy_repository(scratch)
        check_imports(scratch)
        if not args.no_baseline:
            tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
            print(f"baseline: {len(tests)} test selections, unmutated ...", flush=True)
            failed = failed_tests(scratch, tests)
            if failed != []:
                print(f"the named tests fail without any mutation: {failed}")
                return 2
        rows = []
        for mutation in chosen:
            original = apply(scratch, mutation)
            if original is None:
                rows.append((mutation.name, "edit no longer applies: update the entry", "STALE"))
            else:
                try:
                    failed = failed_tests(scratch, mutation.tests)
                finally:
                    (scratch / mutation.file).write_text(original)
                if failed is None:
                    rows.append((mutation.name, f"timed out after {RUN_TIMEOUT} s", "TIMEOUT"))
                else:
                    rows.append((mutation.name, _caught_by(failed), "" if failed else "SURVIVED"))
            print(f"  {rows[-1][0]}: {rows[-1][2] or 'caught'}", flush=True)
    width = [max(len(row[i]) for row in [("mutation", "caught by", ""), *rows]) for i in (0, 1)]
    print(f"\n{'mutation':{width[0]}}  {'caught by':{width[1]}}  survived")
    for name, caught, verdict in rows:
        print(f"{name:{width[0]}}  {caught or '-':{width[1]}}  {verdict or '-'}")
    return 1 if any(verdict for _, _, verdict in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
