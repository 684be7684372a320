"""Which installed distribution provides a component, read from metadata folders on disk.

Real folders on a real ``sys.path``: a component module in its project folder, and the
``.dist-info`` an editable install leaves in site-packages (PEP 610's ``direct_url.json``).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from pathlib import Path

import pytest

from bundler.compat.components import name_and_version, static_version


def _editable_install(site: Path, project: Path, name: str, version: str, module: str) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: a probe\n\n"
        "Version: 9.9.9 is what the description says, not the headers\n"
    )
    (info / "top_level.txt").write_text(f"{module}\n")
    direct = {"url": project.as_uri(), "dir_info": {"editable": True}}
    (info / "direct_url.json").write_text(json.dumps(direct))


def test_an_editable_install_made_after_a_verify_is_seen_by_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The editable installs of a site folder are listed once per change of the folder (as
    importlib.metadata lists its own), so one installed between two verifies counts."""
    site, project = tmp_path / "site", tmp_path / "project"
    (project / "probe_layers").mkdir(parents=True)
    (project / "probe_layers" / "__init__.py").write_text('__version__ = "0.0.1"\n')
    site.mkdir()
    monkeypatch.syspath_prepend(str(project))
    monkeypatch.syspath_prepend(str(site))
    os.utime(site, ns=(0, 0))  # listed at an old time: the install below is a new one

    before = static_version("probe_layers")
    assert (before.distribution, before.version) == (None, "0.0.1")  # its __version__

    _editable_install(site, project, "probe-layers", "1.4.0", "probe_layers")
    after = static_version("probe_layers")
    assert (after.distribution, after.version) == ("probe-layers", "1.4.0")


def test_name_and_version_read_as_the_metadata_parser_reads_them(tmp_path: Path) -> None:
    """Only the headers count (a body line that looks like one does not); folded or missing
    headers fall back to the email parser."""
    _editable_install(tmp_path, tmp_path, "probe-layers", "1.4.0", "probe_layers")
    folder = tmp_path / "probe_layers-1.4.0.dist-info"
    info = importlib.metadata.PathDistribution(folder)
    assert (
        name_and_version(info)
        == ("probe-layers", "1.4.0")
        == (
            info.metadata["Name"],
            info.version,
        )
    )
    (folder / "METADATA").write_text("Metadata-Version: 2.1\nName:\n probe-folded\n\n")
    assert name_and_version(info) == (info.metadata["Name"], info.version)


LITERAL_VERSIONS = {
    "after a docstring and imports": ('"""Layers."""\nimport os\n__version__ = "1.2.0"\n', "1.2.0"),
    "annotated": ('__version__: str = "2.0"\n', "2.0"),
    "named in the docstring first": (
        '"""Read\n__version__ = "0.0.0"\nfor the version."""\n__version__ = "3.1"\n',
        "3.1",
    ),
    "inside a block first": ('if True:\n    __version__ = "9"\n__version__ = "4.0"\n', "4.0"),
    "computed first": ('__version__ = str(5)\n__version__ = "5.0"\n', "5.0"),
    "listed first": ('__all__ = ["__version__"]\n__version__ = "6.0"\n', "6.0"),
    "inside brackets": ('x = [\n__version__ := "7",\n]\n__version__ = "7.1"\n', "7.1"),
    "after a continued line": ('x = 1 + \\\n    2\n__version__ = "8.0"; y = 1\n', "8.0"),
    "in a class": ('class A:\n    __version__ = "9"\n', None),
    "broken later": ('__version__ = "1.0"\ndef f(:\n', "1.0"),
}


@pytest.mark.parametrize("case", LITERAL_VERSIONS)
def test_the_literal_version_is_the_first_module_level_one(tmp_path: Path, case: str) -> None:
    """The statements up to the first line naming ``__version__`` are parsed before the whole
    module: the answer is the first top-level assignment, as the whole module's tree says (a
    module that fails to parse after it still declares it: importing it fails anyway)."""
    from bundler.compat.components import _literal_version

    source, expected = LITERAL_VERSIONS[case]
    module = tmp_path / "layers.py"
    module.write_text(source)
    assert _literal_version(module) == expected


def test_the_literal_version_follows_an_import_from_the_version_module(tmp_path: Path) -> None:
    from bundler.compat.components import _literal_version

    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text('"""A package."""\nfrom ._version import __version__\n')
    (package / "_version.py").write_text('__version__ = "2.5.1"\n')
    assert _literal_version(package / "__init__.py") == "2.5.1"


def test_a_component_imported_meanwhile_by_another_thread_keeps_its_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A load importing a component (which imports Keras first, for seconds) puts it in
    sys.modules before its ``__version__`` is set: a verify in another thread meanwhile reads
    the version from its file, not "declares no version" from the half-made module."""
    import sys
    import threading

    gate, started = threading.Event(), threading.Event()
    monkeypatch.setattr("builtins._probe_gate", (started, gate), raising=False)
    (tmp_path / "slow_layers.py").write_text(
        "import builtins\n"
        "started, gate = builtins._probe_gate\n"
        "started.set()\n"
        "gate.wait(10)  # importing Keras\n"
        '__version__ = "3.2.1"\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "slow_layers", raising=False)
    importer = threading.Thread(target=__import__, args=("slow_layers",))
    importer.start()
    try:
        assert started.wait(10)
        assert "slow_layers" in sys.modules
        during = static_version("slow_layers")
    finally:
        gate.set()
        importer.join()
    assert (during.found, during.version) == (True, "3.2.1")
    after = static_version("slow_layers")
    assert (after.found, after.version) == (True, "3.2.1")
    del sys.modules["slow_layers"]
