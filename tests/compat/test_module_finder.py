"""The static finder: verify says a recorded module is installed exactly when ``import`` finds it.

Each layout is written to a temporary folder and searched there; then a fresh interpreter with
those folders on its path imports each module, so the finder's answer is compared with Python's
own, not with what we think Python does. Every module of a layout notes in a file that it ran:
the finder, unlike the import, must leave that file empty.
"""

from __future__ import annotations

import importlib.machinery
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bundler.compat.module_finder import find_module

from ..conftest import cli_env

EXTENSION = importlib.machinery.EXTENSION_SUFFIXES[0]
RAN = "import os\nopen(os.environ['RAN'], 'a').write(__name__ + '\\n')\n"
EXTENDS = "__path__ = __import__('pkgutil').extend_path(__path__, __name__)\n"

# layout -> (files, the folders on the path, in order)
LAYOUTS = {
    "a plain submodule": ({"p1/pkg/__init__.py": RAN, "p1/pkg/layers.py": RAN}, ["p1"]),
    "a lazy package": (
        {
            "p1/lazy/__init__.py": RAN + "def __getattr__(name):\n    raise AttributeError(name)\n",
            "p1/lazy/_impl/__init__.py": RAN,
            "p1/lazy/_impl/layers.py": RAN,
        },
        ["p1"],
    ),
    "a namespace package split in two": (
        {"p1/ns/other/__init__.py": RAN, "p2/ns/vision/__init__.py": RAN,
         "p2/ns/vision/layers.py": RAN},
        ["p1", "p2"],
    ),
    "a pkgutil.extend_path package": (
        {"p1/old/__init__.py": EXTENDS, "p2/old/__init__.py": EXTENDS, "p2/old/layers.py": RAN},
        ["p1", "p2"],
    ),
    "an extension module": ({"p1/fast/__init__.py": RAN, f"p1/fast/core{EXTENSION}": ""}, ["p1"]),
    "a module shadowed by an earlier entry": (
        {"p1/shadow/__init__.py": RAN, "p2/shadow/__init__.py": RAN, "p2/shadow/layers.py": RAN},
        ["p1", "p2"],
    ),
    "a submodule of a plain module": ({"p1/flat.py": RAN}, ["p1"]),
}  # fmt: skip

MODULES = {
    "a plain submodule": ["pkg", "pkg.layers", "pkg.missing"],
    "a lazy package": ["lazy._impl.layers", "lazy.layers"],
    "a namespace package split in two": ["ns", "ns.vision.layers", "ns.other", "ns.text"],
    "a pkgutil.extend_path package": ["old.layers"],
    "an extension module": ["fast.core"],
    "a module shadowed by an earlier entry": ["shadow", "shadow.layers"],
    "a submodule of a plain module": ["flat", "flat.layers"],
}

# whether Python's import finds each module: anything but ModuleNotFoundError for that very name
# (an empty file named like an extension module is found, then fails to load)
PYTHON_FINDS = """
import importlib, json, sys
def found(name):
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as error:
        return not (error.name == name or name.startswith(str(error.name) + "."))
    except ImportError:
        return True
    return True
print(json.dumps({name: found(name) for name in sys.argv[1:]}))
"""


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """Each layout's search path, written once."""
    folders = {}
    for name, (files, roots) in LAYOUTS.items():
        root = tmp_path_factory.mktemp("layout")
        _write(root, files)
        folders[name] = [str(root / entry) for entry in roots]
    return folders


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_the_finder_finds_what_python_finds_without_running_it(
    layout: str, layouts: dict[str, list[str]]
) -> None:
    search = layouts[layout]
    ours = {name: find_module(name, search) is not None for name in MODULES[layout]}
    answer = subprocess.run(
        [sys.executable, "-S", "-c", PYTHON_FINDS, *MODULES[layout]],
        env=cli_env(PYTHONPATH=":".join(search), RAN=os.devnull),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert answer.returncode == 0, answer.stderr
    assert ours == json.loads(answer.stdout)


@pytest.mark.parametrize(
    ("layout", "module", "origin"),
    [
        pytest.param("a namespace package split in two", "ns.vision.layers",
                     "p2/ns/vision/layers.py", id="namespace-portion"),
        pytest.param("a module shadowed by an earlier entry", "shadow", "p1/shadow/__init__.py",
                     id="first-entry-wins"),
        pytest.param("a lazy package", "lazy._impl.layers", "p1/lazy/_impl/layers.py", id="lazy"),
    ],
)  # fmt: skip
def test_the_finder_names_the_file_import_would_run(
    layout: str, module: str, origin: str, layouts: dict[str, list[str]]
) -> None:
    found = find_module(module, layouts[layout])
    assert found is not None
    base = Path(layouts[layout][0]).parent
    assert found.origin is not None
    assert found.origin.relative_to(base).as_posix() == origin


def test_finding_runs_no_module(
    layouts: dict[str, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = tmp_path / "ran.txt"
    ran.write_text("")
    monkeypatch.setenv("RAN", str(ran))
    for layout, search in layouts.items():
        for name in MODULES[layout]:
            find_module(name, search)
    assert ran.read_text() == ""
    tops = {name.split(".")[0] for names in MODULES.values() for name in names}
    assert sorted(tops & set(sys.modules)) == []
