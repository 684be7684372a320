"""The machinery that keeps the output the README and docs/ show real (``tests/doc_outputs.py``),
on pages of its own: what it compares, what it masks, what an update rewrites."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from . import doc_outputs
from .doc_outputs import Scene

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
