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
