"""The README and the guides print what they show: each page's commands run in a folder prepared
as the page says (its scene), and the output must be the page's (``tests/doc_outputs.py`` says
what is compared, and how ``python -m tests.doc_outputs --update`` rewrites a page). The README's
two commands are the quick start and what CI runs. Last, the machinery itself, on small pages.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bundler import Bundle
from bundler.trust.signing import keygen, sign_bundle

from . import doc_outputs
from .build.test_reproducible import UNSEEDED
from .conftest import (
    EXAMPLES,
    PIP_TEST,
    ROOT,
    CheckPage,
    Registry,
    cli_env,
    console_commands,
    missing,
    page_section,
)
from .doc_outputs import Scene

CLONE = "/home/you/bundler"  # how the pages show the folder a scene runs in: a user's clone


def scene(folder: Path, *, examples: bool = True, **env: str) -> Scene:
    """A scene in ``folder`` (holding a copy of example_bundles/, as a clone does), with this
    interpreter's `bundle` first on PATH and nothing of the developer's bundler settings."""
    if examples:
        shutil.copytree(EXAMPLES, folder / "example_bundles")
    base = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTEST", "BUNDLER_")) and key != "PYTHONPATH"
    }
    base.update(
        TF_CPP_MIN_LOG_LEVEL="3",
        NO_COLOR="1",
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONUNBUFFERED="1",  # stdout and stderr in the order a terminal shows them
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    )
    return Scene(folder, {**base, **env}, shown_as={str(folder): CLONE})


# Bundles the guides start from, built as a user builds them: `bundle build` in a fresh process
# each. (The session's `built` bundles share one process, whose Keras and TensorFlow name their
# layers and functions from counters earlier builds advanced: same weights, other bytes.) The
# fixed `created` makes what a registry is sent (its manifest carries it) the same each run.
USER_BUILT = ("custom_layer", "sequential", "with_metadata")
SOURCE_DATE = "1764547200"  # 2025-12-01T00:00:00Z


@pytest.fixture(scope="module")
def user_built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{example: its bundle}, built in parallel fresh processes, as `bundle build` builds it."""
    out = tmp_path_factory.mktemp("user-built")
    env = {**cli_env(SOURCE_DATE_EPOCH=SOURCE_DATE)}
    builds = {
        name: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bundler",
                "build",
                str(EXAMPLES / name / "manifest.yaml"),
                "-o",
                str(out / name),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in USER_BUILT
    }
    for name, build in builds.items():
        _, stderr = build.communicate(timeout=600)
        assert build.returncode == 0, (name, stderr[-3000:])
    return {name: out / name for name in USER_BUILT}


def copy_bundle(built: dict[str, Path], name: str, target: Path) -> Path:
    shutil.copytree(built[name], target)
    return target


def digest_of(bundle: Path) -> str:
    return str(json.loads((bundle / "bundle.lock.json").read_text())["digest"])


# -- README.md -------------------------------------------------------------------------------------


def test_the_readme_prints_what_it_shows(check_page: CheckPage, tmp_path: Path) -> None:
    check_page("README.md", scene(tmp_path))


def _sh_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL)]


def test_the_readmes_first_command_is_its_quick_start_after_the_install() -> None:
    """The first command installs, then runs exactly the quick start's console commands (which
    the test above runs), with the virtual environment's `bundle`."""
    readme = (ROOT / "README.md").read_text()
    first = _sh_blocks(page_section("README.md", "Two commands"))[0]
    steps = [step.strip() for step in first.split("&&")]
    assert steps[:2] == ["python3 -m venv .venv", ".venv/bin/pip install '.[tensorflow]'"]
    quick_start = [
        command for command, _ in console_commands(page_section("README.md", "Quick start"))
    ]
    assert [step.replace(".venv/bin/bundle", "bundle") for step in steps[2:]] == quick_start[:2]
    assert "pip install 'keras-bundler[tensorflow]'" in readme


def test_ci_runs_the_readmes_two_commands() -> None:
    """`.ci/run` runs the README's quick start from the installed wheel and the same pytest: when
    one changes, so must the other."""
    first, second = _sh_blocks(page_section("README.md", "Two commands"))
    ci = (ROOT / ".ci" / "run").read_text().replace("\\\n  ", "")
    for step in first.split("&&")[2:]:
        step = step.strip().replace(".venv/bin/bundle", '"$bin/bundle"')
        assert step in ci, f".ci/run does not run the README's `{step}`"
    tests = second.split("&&")[-1].strip()
    assert tests == ".venv/bin/python -m pytest"
    assert re.search(r'"\$bin/python" -m pytest( -q)?\)', ci), ".ci/run runs other tests"


def test_the_readmes_service_snippet_runs_as_written(
    built: dict[str, Bundle], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    (snippet,) = re.findall(r"```python\n(.*?)```", page_section("README.md", "Quick start"), re.S)
    shutil.copytree(built["custom_layer"].path, tmp_path / "bundles" / "custom-layer")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(EXAMPLES / "custom_layer" / "src"))  # the component, installed
    exec(compile(snippet, "README.md", "exec"), {})
    mode, digest, shape = capsys.readouterr().out.split(maxsplit=2)
    assert (mode, digest, shape.strip()) == ("keras", built["custom_layer"].digest[:19], "(2, 1)")


def test_the_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= 300, f"README.md has {lines} lines: move the detail to a page of docs/"


# -- docs/ci-gate.md -------------------------------------------------------------------------------


def _signed_custom_layer(built: dict[str, Path], folder: Path) -> Path:
    """bundles/custom-layer, signed with publisher.pem (made here, as a release job has it)."""
    bundle = copy_bundle(built, "custom_layer", folder / "bundles" / "custom-layer")
    private, _ = keygen(folder / "publisher")
    sign_bundle(bundle, private)
    return bundle


def test_the_ci_gate_guide_prints_what_it_shows(
    check_page: CheckPage, user_built: dict[str, Path], tmp_path: Path
) -> None:
    bundle = _signed_custom_layer(user_built, tmp_path)
    ready = scene(tmp_path)
    ready.facts = {"bundles/custom-layer": digest_of(bundle)}
    check_page("docs/ci-gate.md", ready)
    verdict = json.loads((tmp_path / "verdict.json").read_text())  # the widened lock's
    assert (verdict["ok"], verdict["signature"]) == (False, "invalid")
    # the digest covers the lock's fields too: the edit is caught even without a key
    assert [problem["kind"] for problem in verdict["problems"]] == ["signature", "digest"]


def test_the_ci_yaml_runs_only_what_the_gate_guide_runs() -> None:
    """The workflow's `run:` lines are the guide's commands: the ones its console blocks execute
    (without the PYTHONPATH that stands in for the serving image's install) and its install."""
    text = (ROOT / "docs" / "ci-gate.md").read_text()
    executed = {
        re.sub(r"^PYTHONPATH=\S+ ", "", command.split("  # ", 1)[0]).strip()
        for command, _ in console_commands(text)
    }
    (install,) = re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL)
    executed |= {line.split("#", 1)[0].strip() for line in install.splitlines()}
    (workflow,) = re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)
    runs = [
        line.split("run: ", 1)[1].split(" #", 1)[0].strip()
        for line in workflow.splitlines()
        if "- run: " in line
    ]
    assert len(runs) == 4, runs
    # the gate job runs `python -m bundler` (Ruby's `bundle` is on GitHub's runners): the same
    runs = [re.sub(r"^python -m bundler ", "bundle ", run) for run in runs]
    assert [run for run in runs if run not in executed] == []


# -- docs/signing.md -------------------------------------------------------------------------------


def test_the_signing_guide_prints_what_it_shows(
    check_page: CheckPage, user_built: dict[str, Path], tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    from bundler.trust.signing import key_id

    bundle = copy_bundle(user_built, "custom_layer", tmp_path / "bundles" / "custom-layer")
    outcome = check_page("docs/signing.md", scene(tmp_path))
    public = load_pem_public_key((tmp_path / "publisher.pub.pem").read_bytes())
    (signed,) = [line for lines in outcome.printed for line in lines if line.startswith("signed ")]
    assert signed.endswith(f": {key_id(public)}"), "bundle sign prints the key id"
    assert key_id(public) != digest_of(bundle)


# -- docs/registries.md and docs/standard-formats.md -----------------------------------------------


def _registry_scene(folder: Path, registry: Registry, signed_pushes: str) -> Scene:
    """A scene with the registry shown as 127.0.0.1:5000; a push matching ``signed_pushes``
    sends a signature by a key made for the run, so its manifest digest is new each run (a
    bundle's own files and lock are the same each run)."""
    ready = scene(folder, examples=False, BUNDLER_CACHE="cache")
    ready.shown_as[registry.host] = "127.0.0.1:5000"
    ready.varies = [(signed_pushes, r"@(sha256:[0-9a-f]{64})")]
    return ready


def test_the_registry_guide_prints_what_it_shows(
    check_page: CheckPage, user_built: dict[str, Path], registry: Registry, tmp_path: Path
) -> None:
    moons = copy_bundle(user_built, "with_metadata", tmp_path / "bundles" / "moons")
    other = copy_bundle(user_built, "sequential", tmp_path / "bundles" / "other")
    private, _ = keygen(tmp_path / "publisher")
    sign_bundle(other, private)
    ready = _registry_scene(tmp_path, registry, r"^bundle push .*-signed$")
    ready.facts = {"bundles/moons": digest_of(moons)}
    check_page("docs/registries.md", ready)


def test_the_standard_formats_guide_prints_what_it_shows(
    check_page: CheckPage, user_built: dict[str, Path], registry: Registry, tmp_path: Path
) -> None:
    copy_bundle(user_built, "with_metadata", tmp_path / "bundles" / "moons")
    ready = _registry_scene(tmp_path, registry, r"^bundle push ")  # signed with model.sig
    if shutil.which("modelpack", path=ready.env["PATH"]) is None:
        missing("the program 'modelpack' (modelpack-client)", PIP_TEST)
    check_page("docs/standard-formats.md", ready)


# -- docs/custom-code.md ---------------------------------------------------------------------------


def test_the_custom_code_guide_prints_what_it_shows(check_page: CheckPage, tmp_path: Path) -> None:
    check_page("docs/custom-code.md", scene(tmp_path))


# -- docs/reproducible-builds.md -------------------------------------------------------------------


def test_the_reproducible_builds_guide_prints_what_it_shows(
    check_page: CheckPage, tmp_path: Path
) -> None:
    package = tmp_path / "unseeded" / "src" / "unseeded_demo"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "model.py").write_text(UNSEEDED)
    (tmp_path / "unseeded" / "manifest.yaml").write_text(
        "apiVersion: bundler/v1\nname: unseeded\nversion: 0.1.0\n"
        "model: {factory: 'unseeded_demo.model:build'}\ncomponents: []\npaths: [src]\n"
    )
    ready = scene(tmp_path)
    # an unseeded factory draws other weights each run: its digests, sizes and drifts too
    ready.varies = [
        ("unseeded", r"sha256:[0-9a-f]{64}"),
        ("unseeded", r"\d+(?:\.\d+)? (?:B|KB) -> \d+(?:\.\d+)? (?:B|KB)"),
        ("unseeded", r"max abs diff (\S+)"),
        ("unseeded", r"\((\d+ files, \d+\.\d KB)"),
    ]
    check_page("docs/reproducible-builds.md", ready)
    assert (tmp_path / "bundles" / "unseeded" / "bundle.lock.json").is_file(), "the first stays"
    leftovers = [p.name for p in (tmp_path / "bundles").iterdir() if p.name.startswith(".")]
    assert leftovers == [], "the second build is removed"


# -- every page ------------------------------------------------------------------------------------


def _pages_with_console_blocks() -> set[str]:
    documents = [ROOT / "README.md", ROOT / "SECURITY.md", *sorted((ROOT / "docs").glob("*.md"))]
    documents += sorted((ROOT / "example_bundles").glob("*/README.md"))
    return {
        path.relative_to(ROOT).as_posix()
        for path in documents
        if re.search(r"^```console$", path.read_text(), flags=re.MULTILINE)
    }


def test_every_page_with_console_blocks_has_a_test_that_runs_them() -> None:
    assert _pages_with_console_blocks() == set(doc_outputs.PAGES)
    for page, node in doc_outputs.PAGES.items():
        filename, function = node.split("::")
        text = (ROOT / filename).read_text()
        assert f"def {function}(" in text, f"{page}: {node} does not exist"
        assert f'check_page("{page}"' in text, f"{page}: {node} does not check it"


def test_every_page_has_a_record_of_the_environment_it_was_written_in() -> None:
    record = doc_outputs.read_record()
    assert set(record) == set(doc_outputs.PAGES)
    for page, entry in record.items():
        assert set(entry["environment"]) >= {"python", "tensorflow", "keras", "numpy"}, page


# -- the mechanism, on pages of its own ----------------------------------------------------------

ANY_DIGEST = "sha256:$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n')"


def _page(tmp_path: Path, text: str, environment: dict[str, str] | None = None) -> Path:
    """A page ``page.md`` in ``tmp_path``, recorded as written in ``environment`` (default:
    this one), and a folder for its scene."""
    (tmp_path / "page.md").write_text(text)
    entry = {"environment": environment or doc_outputs.current_environment(), "facts": {}}
    doc_outputs.write_record("page.md", entry, tmp_path / "record.json")
    (tmp_path / "scene").mkdir()
    return tmp_path / "page.md"


def _check(tmp_path: Path, *, update: bool = False, **scene_fields: Any) -> doc_outputs.Outcome:
    here = Scene(tmp_path / "scene", {"PATH": os.environ["PATH"]}, **scene_fields)
    return doc_outputs.check_page(
        "page.md", here, update=update, root=tmp_path, record=tmp_path / "record.json"
    )


SHELL_PAGE = """# A page

```console
$ printf 'one\\ntwo\\n'
one
two
$ echo three >&2
three
```
"""


def test_a_page_whose_output_is_what_its_commands_print_passes(tmp_path: Path) -> None:
    _page(tmp_path, SHELL_PAGE)
    outcome = _check(tmp_path)
    assert outcome.printed == [["one", "two"], ["three"]] and outcome.same == [True, True]


def test_an_edited_output_line_fails_naming_the_command_and_the_line(tmp_path: Path) -> None:
    _page(tmp_path, SHELL_PAGE.replace("two\n", "deux\n"))
    with pytest.raises(AssertionError) as caught:
        _check(tmp_path)
    message = str(caught.value)
    assert message.startswith("page.md: 1 command(s) print other than the page shows ")
    assert "\n$ printf 'one\\ntwo\\n'\n@@ -1,2 +1,2 @@\n one\n-deux\n+two" in message
    assert "python -m tests.doc_outputs --update page.md" in message


def test_the_update_rewrites_the_stale_output_and_nothing_else(tmp_path: Path) -> None:
    page = _page(tmp_path, SHELL_PAGE.replace("two\n", "deux\n") + "\nProse stays.\n")
    _check(tmp_path, update=True)
    assert page.read_text() == SHELL_PAGE + "\nProse stays.\n"
    _check(tmp_path)  # and the page checks


def test_timings_vary_and_are_not_compared(tmp_path: Path) -> None:
    _page(tmp_path, '```console\n$ echo "took $RANDOM.5 s"\ntook 0.1 s\n```\n')
    _check(tmp_path)
    _check(tmp_path, update=True)
    assert "took 0.1 s" in (tmp_path / "page.md").read_text(), "an update leaves them alone"


def test_a_value_drawn_anew_is_carried_to_the_commands_that_quote_it(tmp_path: Path) -> None:
    drawn = "sha256:" + "ab" * 32
    _page(
        tmp_path,
        f"```console\n$ echo made {ANY_DIGEST}\nmade {drawn}\n"
        f"$ echo using {drawn}\nusing {drawn}\n```\n",
    )
    outcome = _check(tmp_path, varies=[("^echo made", r"made (\S+)")])
    made = outcome.printed[0][0].split()[1]
    assert made != drawn and outcome.printed[1] == [f"using {made}"]


def test_a_fact_is_read_as_this_runs_value(tmp_path: Path) -> None:
    recorded, now = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    _page(tmp_path, f"```console\n$ echo {recorded}\n{recorded}\n```\n")
    entry = {"environment": doc_outputs.current_environment(), "facts": {"bundle": recorded}}
    doc_outputs.write_record("page.md", entry, tmp_path / "record.json")
    _check(tmp_path, facts={"bundle": now})
    _check(tmp_path, facts={"bundle": now}, update=True)
    assert now in (tmp_path / "page.md").read_text()
    assert doc_outputs.read_record(tmp_path / "record.json")["page.md"]["facts"] == {"bundle": now}


def _digest_page(tmp_path: Path, written_with: str) -> None:
    """A page written with keras ``written_with`` that shows a digest and a size other than
    its command prints (with this environment's keras)."""
    keras = doc_outputs.current_environment()["keras"]
    command = f"$ echo keras {keras} sha256:{'c' * 64} 59.9 KB"
    shown = f"keras {written_with} sha256:{'d' * 64} 59.3 KB"
    environment = {**doc_outputs.current_environment(), "keras": written_with}
    _page(tmp_path, f"```console\n{command}\n{shown}\n```\n", environment)


def test_in_another_environment_digests_and_sizes_are_masked_with_a_warning(
    tmp_path: Path,
) -> None:
    _digest_page(tmp_path, "3.0.1")
    keras = doc_outputs.current_environment()["keras"]
    recorded = "page.md: its output was recorded with keras 3.0.1; "
    with pytest.warns(UserWarning, match=rf"^{recorded}here keras {keras}: digests, sizes and "):
        _check(tmp_path)


def test_in_the_recorded_environment_a_digest_is_compared_exactly(tmp_path: Path) -> None:
    _digest_page(tmp_path, doc_outputs.current_environment()["keras"])
    with pytest.raises(AssertionError, match="print other than the page shows"):
        _check(tmp_path)


def test_a_failure_the_page_does_not_show_fails(tmp_path: Path) -> None:
    _page(tmp_path, "```console\n$ false\n```\n")
    with pytest.raises(AssertionError, match=r"exited 1, which its output does not show"):
        _check(tmp_path)
    _page_with_echo = "```console\n$ false\n$ echo $?\n1\n```\n"
    (tmp_path / "page.md").write_text(_page_with_echo)
    _check(tmp_path)
