"""Conformance: ``bundle verify`` says OK exactly when ``load_bundle`` loads the build's model.

Verify predicts a load from a model of the loader; the promise holds only if the two agree on
every layout a Python package may have, not only on ours. So each case below is a small package
written the way real packages are (registration in a submodule nothing imports, unregistered
classes, a lazy ``__getattr__``, re-exports, a registered name unlike the module path, a class
moved between releases, a namespace package, a real ``pip install -e``), plus real packages from
PyPI (kimm 0.2.5, keras-tcn, keras-hub). Each is built in a fresh interpreter, then checked in
another that sees only what a service would (the component, not the factory): ``verify`` here,
``verify --env`` with the file ``bundle env --bundle`` writes there, ``verify --smoke``, and
``load_bundle`` under every policy, and the model server's metadata. They must agree, and what
loads must give the build's outputs.

Every interpreter runs the throwaway virtual environment that holds the editable install (it
sees this environment's packages through a ``.pth`` file, as the worktree's own does). Builds run
in one child, the checks in one child per case (verifies first: they import nothing), two at a
time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bundler.lock.model import lock_digest

from .conftest import EXAMPLES, cli_env

POLICIES = ("strict", "adapt", "fallback")
KERAS = dict.fromkeys(POLICIES, "keras")

LAYER = '''
import keras


{decorator}
class {name}(keras.layers.Layer):
    """Multiplies by a learned vector and a constant: the weights decide the output."""

    def __init__(self, factor=2.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1],), initializer="random_normal")

    def call(self, x):
        return x * self.w * self.factor

    def get_config(self):
        return {{**super().get_config(), "factor": self.factor}}
'''


def layer(name: str, decorator: str = "") -> str:
    return LAYER.format(name=name, decorator=decorator).replace("\n\n\n\nclass", "\n\n\nclass")


def registered(package: str, name: str | None = None) -> str:
    named = f", name={name!r}" if name else ""
    return f"@keras.saving.register_keras_serializable(package={package!r}{named})"


NEVER = "raise RuntimeError('nothing the lock does not name may be imported')\n"


def factory(imports: str, layer_expression: str, activation: str = "None") -> str:
    body = textwrap.dedent(
        f"""
        def build():
            keras.utils.set_random_seed(0)
            inputs = keras.Input((4,))
            x = {layer_expression}(inputs)
            return keras.Model(inputs, keras.layers.Dense(3, activation={activation})(x))
        """
    )
    return f"import keras\n{imports}\n\n{body}"


@dataclass(frozen=True)
class Case:
    """A package layout: its files, how the model is made, and what every load must do.

    ``folders`` are the component's ``sys.path`` entries (relative to the case folder), searched
    in order, both at build and in the service; ``service`` replaces the component's files there
    (another release); ``bundle_of`` checks another case's bundle.
    """

    component: str = ""
    version: str = ""
    files: dict[str, str] = field(default_factory=dict)
    factory: str = ""
    folders: tuple[str, ...] = ("pkgs",)
    service: dict[str, str] | None = None
    manifest: Path | None = None  # an example bundle's manifest instead of the above
    bundle_of: str | None = None
    modes: dict[str, str] = field(default_factory=lambda: dict(KERAS))


CASES: dict[str, Case] = {
    "registration-in-a-submodule-init-does-not-import": Case(
        component="cs_sub",
        version="1.0.0",
        files={
            "pkgs/cs_sub/__init__.py": '"""The layers live in cs_sub.layers."""\n'
            '__version__ = "1.0.0"\n',
            "pkgs/cs_sub/layers.py": layer("Shift", registered("cs_sub")),
            "pkgs/cs_sub/unused.py": NEVER,
        },
        factory=factory("from cs_sub.layers import Shift", "Shift()"),
    ),
    "unregistered-classes-and-functions-in-submodules": Case(
        component="cs_unreg",
        version="2.1.0",
        files={
            "pkgs/cs_unreg/__init__.py": '__version__ = "2.1.0"\n',
            "pkgs/cs_unreg/blocks/__init__.py": "",
            "pkgs/cs_unreg/blocks/dense.py": layer("Block"),
            "pkgs/cs_unreg/acts.py": "import keras\n\n\ndef wiggle(x):\n"
            "    return x * keras.ops.sigmoid(x)\n",
            "pkgs/cs_unreg/unused.py": NEVER,
        },
        factory=factory(
            "from cs_unreg.acts import wiggle\nfrom cs_unreg.blocks.dense import Block",
            "Block()",
            activation="wiggle",
        ),
    ),
    "lazy-getattr-package": Case(
        component="cs_lazy",
        version="0.4.0",
        files={
            "pkgs/cs_lazy/__init__.py": '__version__ = "0.4.0"\n\n\ndef __getattr__(name):\n'
            '    if name == "Gate":\n        from ._impl import Gate\n\n        return Gate\n'
            "    raise AttributeError(name)\n",
            "pkgs/cs_lazy/_impl.py": layer("Gate", registered("Lazy")),
            "pkgs/cs_lazy/unused.py": NEVER,
        },
        factory=factory("import cs_lazy", "cs_lazy.Gate()"),
    ),
    "re-export-of-an-unregistered-class": Case(
        component="cs_reexp",
        version="1.0.0",
        files={
            "pkgs/cs_reexp/__init__.py": '__version__ = "1.0.0"\nfrom ._core.layer import Mix\n',
            "pkgs/cs_reexp/_core/__init__.py": "",
            "pkgs/cs_reexp/_core/layer.py": layer("Mix"),
        },
        factory=factory("from cs_reexp import Mix", "Mix()"),
    ),
    "registered-name-unlike-the-module-path": Case(
        component="cs_named",
        version="3.0.0",
        files={
            "pkgs/cs_named/__init__.py": '__version__ = "3.0.0"\n',
            "pkgs/cs_named/nn/__init__.py": "",
            "pkgs/cs_named/nn/core.py": layer("Impl", registered("Acme", "Thing")),
        },
        factory=factory("from cs_named.nn.core import Impl", "Impl()"),
    ),
    "class-moved-between-releases-with-a-re-export": Case(
        component="cs_moved",
        version="1.0.0",
        files={
            "pkgs/cs_moved/__init__.py": '__version__ = "1.0.0"\n',
            "pkgs/cs_moved/old.py": layer("Block", registered("cs_moved")),
        },
        factory=factory("from cs_moved.old import Block", "Block()"),
        service={
            "pkgs/cs_moved/__init__.py": '__version__ = "1.1.0"\n',
            "pkgs/cs_moved/new.py": layer("Block", registered("cs_moved")),
            "pkgs/cs_moved/old.py": "from cs_moved.new import Block  # moved in 1.1.0\n",
        },
    ),
    "class-moved-between-releases-without-a-re-export": Case(
        component="cs_moved",
        bundle_of="class-moved-between-releases-with-a-re-export",
        service={
            "pkgs/cs_moved/__init__.py": '__version__ = "1.2.0"\n',
            "pkgs/cs_moved/new.py": layer("Block", registered("cs_moved")),
        },
        modes={"strict": "refused", "adapt": "refused", "fallback": "graph"},
    ),
    "namespace-package-in-two-folders": Case(
        component="cs_ns.vision",
        version="0.1.0",
        files={
            "first/cs_ns/text/__init__.py": "",
            "second/cs_ns/vision/__init__.py": '__version__ = "0.1.0"\n',
            "second/cs_ns/vision/layers.py": layer("Lens", registered("cs_ns")),
        },
        factory=factory("from cs_ns.vision.layers import Lens", "Lens()"),
        folders=("first", "second"),
    ),
    "editable-install": Case(
        component="cs_edit",
        version="0.3.0",
        factory=factory("from cs_edit.layers import Knob", "Knob()"),
        folders=(),  # pip install -e put it in the environment (EDITABLE)
    ),
    "kimm-0.2.5-from-pypi": Case(
        component="kimm",
        version="0.2.5",
        factory=textwrap.dedent(
            """
            import keras
            import kimm


            def build():
                keras.utils.set_random_seed(0)
                return kimm.models.MobileNetV3W050Small(
                    input_shape=(32, 32, 3), weights=None, classes=4
                )
            """
        ),
        folders=(),
    ),
    "keras-tcn-from-pypi": Case(manifest=EXAMPLES / "tcn_forecaster" / "manifest.yaml"),
    "keras-hub-from-pypi": Case(manifest=EXAMPLES / "tiny_bert" / "manifest.yaml"),
}

EDITABLE = {  # a flat layout: setuptools installs it with a finder, not a path entry
    "pyproject.toml": '[build-system]\nrequires = ["setuptools>=64"]\n'
    'build-backend = "setuptools.build_meta"\n\n[project]\nname = "cs-edit"\nversion = "0.3.0"\n\n'
    '[tool.setuptools]\npackages = ["cs_edit"]\n',
    "cs_edit/__init__.py": '"""Knob lives in cs_edit.layers; nothing here imports it."""\n',
    "cs_edit/layers.py": layer("Knob", registered("cs_edit")),
    "cs_edit/unused.py": NEVER,
}


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _manifest(name: str, case: Case, root: Path) -> Path:
    module = f"f_{name.replace('-', '_').replace('.', '_')}"
    _write(root, {f"factory/{module}.py": case.factory})
    paths = ", ".join(["factory", *case.folders])
    (root / "manifest.yaml").write_text(
        "apiVersion: bundler/v1\n"
        f"name: {name}\nversion: 0.1.0\n"
        f"model:\n  factory: {module}:build\n"
        f'components:\n  - module: {case.component}\n    version: "{case.version}"\n'
        f"paths: [{paths}]\n"
    )
    return root / "manifest.yaml"


# -- the interpreters ------------------------------------------------------------------------------


def _venv(root: Path) -> Path:
    """A throwaway venv that sees this one's packages (and bundler), plus an editable install."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    site_packages = next((root / "lib").glob("python*/site-packages"))
    ours = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_relative_to(
        Path(sys.prefix)))  # fmt: skip
    (site_packages / "_objects_base.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    project = root.parent / "cs_edit_project"
    _write(project, EDITABLE)
    python = root / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "-e", str(project)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-3000:]
    assert list(site_packages.glob("__editable___cs_edit_*finder.py")), "not a finder install"
    return python


BUILD = """
import json, sys
from bundler import build_bundle
from bundler.errors import BundleError
verdicts = {}
for name, manifest, out in json.loads(sys.argv[1]):
    try:
        build_bundle(manifest, out)
        verdicts[name] = "built"
    except BundleError as error:
        verdicts[name] = str(error)
print(json.dumps(verdicts))
"""

CHECK = """
import contextlib, io, json, sys, warnings
from bundler import load_bundle, verify_bundle
from bundler.cli.main import main
from bundler.errors import BundleError
from bundler.load.golden import replay_examples
root, env_file, tops = sys.argv[1], sys.argv[2], tuple(sys.argv[3].split(","))
POLICIES = ("strict", "adapt", "fallback")
out = {"verify": {}, "target": {}, "smoke": {}, "load": {}}

def verdict(report):
    return {"ok": report.ok, "mode": report.plan.mode, "outcome": report.plan.outcome,
            "problems": [str(p) for p in report.problems]}

# first what imports nothing: verify here, `bundle env --bundle` here, verify --env with its file
for policy in POLICIES:
    out["verify"][policy] = verdict(verify_bundle(root, policy=policy))
with contextlib.redirect_stdout(io.StringIO()) as printed:
    assert main(["env", "--bundle", root]) == 0
with open(env_file, "w") as f:
    f.write(printed.getvalue())
for policy in POLICIES:
    out["target"][policy] = verdict(verify_bundle(root, policy=policy, env=env_file))
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for policy in POLICIES:
        out["smoke"][policy] = verdict(verify_bundle(root, policy=policy, smoke=True))
    for policy in POLICIES:
        try:
            loaded = load_bundle(root, policy=policy)
        except BundleError as error:
            out["load"][policy] = {"error": type(error).__name__, "message": error.message}
            continue
        results, problems = replay_examples(loaded)
        out["load"][policy] = {
            "mode": loaded.mode,
            "plan_mode": loaded.compatibility.mode,
            "same_outputs": bool(results) and not problems,
        }
    try:
        from bundler.serve.model import load_for_serving
        out["serve"] = load_for_serving(root, "adapt").metadata()["parameters"]["mode"]
    except BundleError as error:
        out["serve"] = type(error).__name__
out["imported"] = sorted(m for m in sys.modules if m.split(".")[0] in tops)
print(json.dumps(out))
"""


def _run(python: Path, code: str, *args: str, path: list[Path]) -> Any:
    env = cli_env(PYTHONPATH=os.pathsep.join(str(p) for p in path))
    result = subprocess.run(
        [str(python), "-c", code, *args], env=env, capture_output=True, text=True, timeout=1200
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class Run:
    root: Path  # the cases' folders, bundles/<case> and the venv
    outcomes: dict[str, dict[str, Any]]  # case -> what each check said


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Every case built in fresh interpreters, then checked in one fresh interpreter each."""
    pytest.importorskip("kimm", reason="kimm 0.2.5 is in the test extra: pip install -e '.[test]'")
    root = tmp_path_factory.mktemp("conformance")
    python = _venv(root / "venv")
    jobs = []
    for name, case in CASES.items():
        if case.bundle_of is not None:
            continue
        folder = root / name
        _write(folder, case.files)
        manifest = case.manifest or _manifest(name, case, folder)
        jobs.append([name, str(manifest), str(root / "bundles" / name)])
    halves = [jobs[0::2], jobs[1::2]]  # two builders: TensorFlow's start-up paid twice, in parallel
    with ThreadPoolExecutor(2) as pool:
        built: dict[str, str] = {}
        for verdicts in pool.map(lambda h: _run(python, BUILD, json.dumps(h), path=[]), halves):
            built.update(verdicts)

    def check(name: str) -> tuple[str, dict[str, Any]]:
        case = CASES[name]
        source = CASES[case.bundle_of] if case.bundle_of else case
        folder = root / (case.bundle_of or name)
        if case.service is not None:  # the service has another release of the component
            folder = root / f"{name}-service"
            _write(folder, case.service)
        if source.manifest is not None:
            tops = "tcn" if "tcn" in name else "keras_hub"
        else:
            tops = source.component.split(".")[0]
        bundle = root / "bundles" / (case.bundle_of or name)
        if built.get(case.bundle_of or name) != "built":
            return name, {"build": built.get(case.bundle_of or name)}
        path = [folder / entry for entry in source.folders]
        outcome = _run(python, CHECK, str(bundle), str(root / f"{name}.env"), tops, path=path)
        return name, {"build": "built", **outcome}

    with ThreadPoolExecutor(2) as pool:
        return Run(root, dict(pool.map(check, CASES)))


@pytest.fixture(scope="module")
def conformance(run: Run) -> dict[str, dict[str, Any]]:
    return run.outcomes


def _load_mode(entry: dict[str, Any]) -> str:
    mode: str = entry.get("mode", "refused")
    return mode


@pytest.mark.parametrize("name", list(CASES))
def test_each_layout_builds_and_loads_as_a_service_would(
    name: str, conformance: dict[str, dict[str, Any]]
) -> None:
    outcome = conformance[name]
    assert outcome["build"] == "built"
    assert {p: _load_mode(outcome["load"][p]) for p in POLICIES} == CASES[name].modes
    for policy in POLICIES:
        if "mode" in outcome["load"][policy]:
            assert outcome["load"][policy]["same_outputs"], (policy, outcome["load"][policy])


def test_verify_ok_exactly_when_load_gives_the_build_outputs(
    conformance: dict[str, dict[str, Any]],
) -> None:
    """The product's promise, across every layout: each verdict, and each predicted mode, is the
    load's (here, on the target by its `bundle env` file, and after a smoke load)."""
    disagreements: list[tuple[Any, ...]] = []
    for name, outcome in conformance.items():
        for policy in POLICIES:
            load = outcome["load"][policy]
            loads = "mode" in load and load["same_outputs"]
            mode = _load_mode(load)
            for check in ("verify", "target", "smoke"):
                said = outcome[check][policy]
                if said["ok"] != loads or said["mode"] != mode:
                    disagreements.append((name, policy, check, said["ok"], said["mode"], load))
            if "mode" in load and load["plan_mode"] != mode:
                disagreements.append((name, policy, "compatibility", load["plan_mode"], load))
        serve = outcome["serve"]
        if serve != _load_mode(outcome["load"]["adapt"]) and "mode" in outcome["load"]["adapt"]:
            disagreements.append((name, "adapt", "serve", serve))
    assert disagreements == []


@pytest.mark.parametrize(
    "name", [n for n, c in CASES.items() if any(NEVER in text for text in c.files.values())]
)
def test_loading_imports_only_the_modules_the_lock_names(
    name: str, conformance: dict[str, dict[str, Any]]
) -> None:
    """Each such package has an `unused` module that raises when imported; the loads above would
    have failed, but the list of imported modules says it directly."""
    imported = conformance[name]["imported"]
    assert imported and [m for m in imported if m.endswith(".unused")] == []


def test_verify_names_the_missing_module_its_objects_and_what_to_install(
    conformance: dict[str, dict[str, Any]],
) -> None:
    said = conformance["class-moved-between-releases-without-a-re-export"]
    for check in ("verify", "target"):
        problem = said[check]["strict"]["problems"][0]
        assert problem.splitlines()[3].split() == [
            "cs_moved", "1.0.0", "^1.0.0", "1.2.0", "incompatible:", "installed", "without",
            "the", "module", "the", "model's", "objects", "are", "defined", "in:", "cs_moved.old",
            "(defines", "cs_moved>Block)",
        ]  # fmt: skip
        assert problem.splitlines()[-2] == (
            "to load it: install cs_moved 1.0.0 as the bundle was built with it (the version the "
            "bundle was built with has cs_moved.old)"
        )


def test_a_failed_fallback_says_it_serves_the_graph(
    conformance: dict[str, dict[str, Any]],
) -> None:
    said = conformance["class-moved-between-releases-without-a-re-export"]["verify"]["fallback"]
    assert (said["ok"], said["outcome"]) == (True, "serves the SavedModel graph")


# -- a lock without defined_in (built by an older bundler) -----------------------------------------


def test_an_older_lock_loads_as_before_and_the_error_names_class_module_and_remedy(
    run: Run, tmp_path: Path
) -> None:
    """Without the lock's record, load finds objects by registration, as bundlers before did:
    the layer registered in a submodule nobody imports is not found, and the error says so."""
    root = run.root
    name = "registration-in-a-submodule-init-does-not-import"
    bundle = tmp_path / "older"
    shutil.copytree(root / "bundles" / name, bundle)
    lock = json.loads((bundle / "bundle.lock.json").read_text())
    for component in lock["components"]:
        del component["defined_in"]
    lock["digest"] = lock_digest(lock)  # resealed: the lock as an older bundler wrote it
    (bundle / "bundle.lock.json").write_text(json.dumps(lock))
    code = (
        "import json, sys, warnings\nfrom bundler import load_bundle, verify_bundle\n"
        "from bundler.errors import BundleError\nreport = verify_bundle(sys.argv[1])\n"
        "try:\n    load_bundle(sys.argv[1])\n    said = 'loaded'\n"
        "except BundleError as error:\n    said = error.message\n"
        "print(json.dumps([report.ok, list(report.plan.notes), said]))\n"
    )
    ok, notes, said = _run(Path(sys.executable), code, str(bundle), path=[root / name / "pkgs"])
    assert ok is True
    assert notes == [
        "the lock does not record where cs_sub's objects are defined (an older bundler built "
        "it): load imports cs_sub only and finds its objects by what it registers with Keras; "
        "rebuild the bundle to have its modules recorded and checked"
    ]
    assert said == (
        "Keras could not find class 'Shift' (module 'cs_sub.layers' in the model config): this "
        "bundle's lock does not record where its objects are defined (an older bundler built "
        "it), so load imported only its components, and none of 'cs_sub' imports "
        "'cs_sub.layers'; rebuild the bundle with this bundler, whose lock records the module "
        "that defines it"
    )
