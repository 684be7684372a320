"""The build rehearses the load: before a bundle is put in place, a fresh interpreter that sees
what a service sees (the installed packages and the declared components, not the factory, the
manifest's other paths or the current folder) loads it and replays its golden examples. A bundle
that cannot load there is never built; the rehearsal itself never outlives the build.

Each rehearsed build here starts a fresh interpreter that imports TensorFlow (seconds), so only
the tests about the rehearsal build with it; the other builds opt out.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bundler import BuildError, Bundle, UsageError, build_bundle
from bundler.build.rehearsal.run import MARKER, rehearsal_timeout
from bundler.lock.model import LOCK_FILENAME, Rehearsal

from ..conftest import EXAMPLES, ROOT, cli_env, run_bundle, run_python

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="finds the rehearsal's process in /proc"
)

REFUSED = (
    "the bundle does not load where a service would load it (a fresh interpreter with only the "
    "installed packages and the declared components)"
)
BUILDER = os.getpid()  # the process that builds in-process here; a rehearsal is another one

LAYER = '''\
"""The component: the Scale layer."""
{before}
import keras

__version__ = "1.0.0"


@keras.saving.register_keras_serializable(package="mylib")
class Scale(keras.layers.Layer):
    def __init__(self, factor=2.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        {during}
        return x * self.factor

    def get_config(self):
        return {{**super().get_config(), "factor": self.factor}}
'''

FACTORY = '''\
"""The model factory, beside the component package in src/."""
{before}
import keras

from mylib.layers import Scale


def build():
    inputs = keras.Input((4,), name="x")
    return keras.Model(inputs, keras.layers.Dense(2)(Scale()(inputs)))
'''

MANIFEST = """\
apiVersion: bundler/v1
name: rehearsed
version: 1.0.0
model: {{factory: "train:build"}}
components:
  - module: {component}
    version: "1.0.0"
paths: [src]
"""


def write_project(
    root: Path,
    *,
    component: str = "mylib.layers",
    layer_before: str = "",
    layer_during: str = "pass",
    factory_before: str = "",
    init: str = '"""mylib."""\n__version__ = "1.0.0"\n',
    files: dict[str, str] | None = None,
) -> Path:
    """A project laid out as users lay theirs out: ``src/mylib`` (the component package) beside
    ``src/train.py`` (the factory); returns its manifest."""
    (root / "src" / "mylib").mkdir(parents=True)
    (root / "src" / "mylib" / "__init__.py").write_text(init)
    layer = LAYER.format(before=layer_before, during=layer_during)
    (root / "src" / "mylib" / "layers.py").write_text(layer)
    (root / "src" / "train.py").write_text(FACTORY.format(before=factory_before))
    for name, text in (files or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    manifest = root / "manifest.yaml"
    manifest.write_text(MANIFEST.format(component=component))
    return manifest


@pytest.fixture(autouse=True)
def forget_the_projects(tmp_path: Path) -> Iterator[None]:
    """Each test's project is imported afresh: its modules and sys.path changes go with it."""
    path = list(sys.path)
    yield
    sys.path[:] = path
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


def rehearsals_of(parent: int) -> list[int]:
    """The rehearsal interpreters process ``parent`` started that are still running."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        at = argv.index(MARKER.encode()) if MARKER.encode() in argv else -1
        if at > 0 and state != "Z" and json.loads(argv[at + 1]).get("parent") == parent:
            found.append(int(entry.name))
    return found


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def refused(manifest: Path, reason: str, *details: str) -> str:
    return "\n".join([f"{manifest}: {REFUSED}: {reason}", *(f"  {line}" for line in details)])


def failed(manifest: Path, why: str) -> str:
    return f"{manifest}: rehearsing the load in a fresh interpreter failed: {why}"


# -- layouts no service can load are refused at build ---------------------------------------------


HELPERS_LAYOUT = {
    "layer_before": "from helpers import FACTOR",
    "files": {"src/helpers.py": "FACTOR = 2.0\n"},
}
HELPERS_REASON = (
    "importing component 'mylib.layers' needs module 'helpers', which the build imported from the "
    "manifest's paths (src/helpers.py)"
)
HELPERS_REMEDY = (
    "declare 'helpers' as a component too, or install the package that provides it where the "
    "bundle will be loaded"
)

UNLOADABLE = [
    pytest.param(
        HELPERS_LAYOUT,
        HELPERS_REASON,
        HELPERS_REMEDY,
        id="the component imports another module of paths",
    ),
    pytest.param(
        {"layer_during": "import train  # the factory module"},
        "the load needs module 'train', which the build imported from the manifest's paths "
        "(src/train.py)",
        "declare 'train' as a component too, or install the package that provides it where the "
        "bundle will be loaded",
        id="the component imports the factory module",
    ),
    pytest.param(
        {
            "factory_before": "import pathlib, sys\n"
            "sys.path.insert(0, str(pathlib.Path(__file__).parent.parent / 'vendor'))",
            "layer_during": "import vendor_math",
            "files": {"vendor/vendor_math.py": "FACTOR = 2.0\n"},
        },
        "the load needs module 'vendor_math', which the build imported from {vendor}, a folder on "
        "its sys.path that is not installed (did the factory add it?)",
        "declare 'vendor_math' as a component too, or install the package that provides it where "
        "the bundle will be loaded",
        id="the component needs a folder the factory put on sys.path",
    ),
]


@pytest.mark.parametrize(("layout", "reason", "remedy"), UNLOADABLE)
def test_build_refuses_a_layout_no_service_can_load(
    tmp_path: Path, layout: dict[str, object], reason: str, remedy: str
) -> None:
    manifest = write_project(tmp_path, **layout)  # type: ignore[arg-type]
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(BuildError) as raised:
        build_bundle(manifest, tmp_path / "out")
    vendor = os.path.realpath(tmp_path / "vendor" / "vendor_math.py")
    assert str(raised.value) == refused(manifest, reason.format(vendor=vendor), remedy)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no bundle, no temporaries
    assert rehearsals_of(os.getpid()) == []


def test_the_ordinary_layout_builds_exactly_when_a_service_loads_it(tmp_path: Path) -> None:
    """``mylib/__init__.py`` a docstring, the layer registered in ``mylib/layers.py``, the manifest
    declaring ``mylib``: the build's verdict is a service's. While the loader imports only the
    declared module, neither loads it, and the build says which class and module to declare; a
    loader that imports the module registering the class makes both load it."""
    manifest = write_project(tmp_path, component="mylib")
    try:
        build_bundle(manifest, tmp_path / "rehearsed")
        rehearsal_error = None
    except BuildError as error:
        rehearsal_error = str(error)
    build_bundle(manifest, tmp_path / "unrehearsed", rehearse=False)
    service = run_python(
        "import sys, bundler\n"
        "try:\n"
        f"    bundler.load_bundle({str(tmp_path / 'unrehearsed')!r}, check_examples=True)\n"
        "except bundler.BundleError as error:\n"
        "    sys.exit(f'refused: {error}')\n",
        env=cli_env(PYTHONPATH=str(tmp_path / "src")),
        cwd=tmp_path,
    )
    assert (rehearsal_error is None) == (service.returncode == 0), (rehearsal_error, service)
    if rehearsal_error is not None:
        assert rehearsal_error == refused(
            manifest,
            "Keras found no class 'Scale' (registered as 'mylib>Scale') of module 'mylib.layers', "
            "which importing the component 'mylib' does not import",
            "declare 'mylib.layers' as the component, or import it from mylib/__init__.py",
        )
        assert not (tmp_path / "rehearsed").exists()


def test_an_example_whose_component_lives_in_paths_is_rehearsed_and_leaves_no_links(
    built: dict[str, Bundle],
) -> None:
    """custom_layer's src/ holds the component (acme_layers) and the factory (acme_models): the
    fresh interpreter was given a link to the first, loaded the bundle, and the links are gone."""
    bundle = built["custom_layer"]
    assert bundle.rehearsal.rehearsed and bundle.rehearsal.examples == 1
    assert bundle.lock.rehearsal == Rehearsal(rehearsed=True, examples=1)
    leftovers = [p.name for p in bundle.path.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # the folder of links is gone with the rehearsal


# -- a rehearsal that goes wrong is a verdict, and never outlives the build ------------------------


IN_THE_REHEARSAL_ONLY = f"import os, signal, sys\nif os.getpid() != {BUILDER}:\n"


@pytest.mark.parametrize(
    ("ending", "why"),
    [
        pytest.param(
            "os._exit(7)",
            "it exited with code 7 before reporting; its last output: giving up",
            id="exits",
        ),
        pytest.param(
            "os.kill(os.getpid(), signal.SIGKILL)",
            "it was killed by SIGKILL before reporting; its last output: giving up",
            id="is killed",
        ),
    ],
)
def test_a_rehearsal_that_dies_is_a_clear_verdict(tmp_path: Path, ending: str, why: str) -> None:
    dying = f"{IN_THE_REHEARSAL_ONLY}    print('giving up', flush=True)\n    {ending}\n"
    manifest = write_project(tmp_path, layer_before=dying)
    with pytest.raises(BuildError) as raised:
        build_bundle(manifest, tmp_path / "out")
    assert str(raised.value) == failed(manifest, why)
    assert not (tmp_path / "out").exists() and rehearsals_of(os.getpid()) == []


def test_a_rehearsal_that_hangs_is_stopped_at_the_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The load hangs, after starting a process of its own: both are stopped."""
    hanging = (
        f"{IN_THE_REHEARSAL_ONLY}    import subprocess, time\n"
        "    helper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"    open({str(tmp_path / 'helper.pid')!r}, 'w').write(str(helper.pid))\n"
        "    time.sleep(600)\n"
    )
    manifest = write_project(tmp_path, layer_before=hanging)
    monkeypatch.setenv("BUNDLER_REHEARSAL_TIMEOUT", "2")
    started = time.monotonic()
    with pytest.raises(BuildError) as raised:
        build_bundle(manifest, tmp_path / "out")
    assert str(raised.value) == failed(
        manifest,
        "it did not finish within 2 s (set BUNDLER_REHEARSAL_TIMEOUT to wait longer, or build "
        "with --no-rehearse to skip it); it was stopped",
    )
    assert time.monotonic() - started < 120
    assert rehearsals_of(os.getpid()) == []
    helper = int((tmp_path / "helper.pid").read_text())
    deadline = time.monotonic() + 10  # killed with the rehearsal's group; reaped by init
    while running(helper) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running(helper)
    assert not (tmp_path / "out").exists()


def test_a_report_that_is_not_json_is_a_clear_verdict(tmp_path: Path) -> None:
    scribbling = (
        f"{IN_THE_REHEARSAL_ONLY}    import json\n"
        "    os.write(json.loads(sys.argv[2])['channel'], b'this is not json\\n')\n"
    )
    manifest = write_project(tmp_path, layer_before=scribbling)
    with pytest.raises(BuildError) as raised:
        build_bundle(manifest, tmp_path / "out")
    assert str(raised.value) == failed(
        manifest, "its report was not a JSON object: b'this is not json'"
    )
    assert not (tmp_path / "out").exists() and rehearsals_of(os.getpid()) == []


def test_what_the_rehearsal_prints_is_not_taken_for_its_verdict(tmp_path: Path) -> None:
    """TensorFlow and user code print what they like on stdout and stderr: even a line that
    looks like a failed verdict there leaves the real verdict (loaded) alone."""
    noisy = (
        f"{IN_THE_REHEARSAL_ONLY}"
        '    print(\'{"ok": false, "error": {"type": "Fake", "message": "printed"}}\')\n'
        "    print('E0000 00:00:00.000000 1 noise.cc:1] not a verdict', file=sys.stderr)\n"
    )
    manifest = write_project(tmp_path, layer_before=noisy)
    bundle = build_bundle(manifest, tmp_path / "out")
    assert bundle.rehearsal.rehearsed and bundle.lock.rehearsal == Rehearsal(
        rehearsed=True, examples=1
    )


@pytest.mark.parametrize("value", ["abc", "0", "-5", "inf", "nan"])
def test_a_bad_rehearsal_timeout_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("BUNDLER_REHEARSAL_TIMEOUT", value)
    with pytest.raises(UsageError) as raised:
        rehearsal_timeout()
    assert str(raised.value) == (
        f"BUNDLER_REHEARSAL_TIMEOUT: {value!r} is not a positive number of seconds"
    )


def test_a_bad_rehearsal_timeout_fails_the_build_before_it_writes_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUNDLER_REHEARSAL_TIMEOUT", "soon")
    with pytest.raises(UsageError, match="'soon' is not a positive number of seconds"):
        build_bundle(EXAMPLES / "sequential" / "manifest.yaml", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_the_rehearsal_timeout_defaults_to_five_minutes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BUNDLER_REHEARSAL_TIMEOUT", raising=False)
    assert rehearsal_timeout() == 300.0
    monkeypatch.setenv("BUNDLER_REHEARSAL_TIMEOUT", "2.5")
    assert rehearsal_timeout() == 2.5


# -- killed and interrupted builds ---------------------------------------------------------------


def _start_build(out: Path) -> subprocess.Popen[str]:
    """`bundle build` in a process of its own, once its rehearsal interpreter is running."""
    manifest = str(EXAMPLES / "sequential" / "manifest.yaml")
    build = subprocess.Popen(
        [sys.executable, "-m", "bundler", "build", manifest, "-o", str(out)],
        cwd=ROOT,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not rehearsals_of(build.pid):
        assert build.poll() is None and time.monotonic() < deadline, "no rehearsal started"
        time.sleep(0.05)
    return build


def test_a_build_killed_with_sigkill_takes_its_rehearsal_with_it(tmp_path: Path) -> None:
    """Killed while its rehearsal still imports TensorFlow (seconds): it dies with the build at
    once (PR_SET_PDEATHSIG), not once that import is done and it finds no build to serve."""
    build = _start_build(tmp_path / "out")
    time.sleep(1)  # it has reported where it finds things, and imports TensorFlow (2.5 s or more)
    build.kill()
    build.communicate()
    deadline = time.monotonic() + 1
    while rehearsals_of(build.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert rehearsals_of(build.pid) == []
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("sent", "code", "said"),
    [
        pytest.param(signal.SIGINT, 130, "bundle: interrupted\n", id="ctrl-c"),
        pytest.param(signal.SIGTERM, 128 + signal.SIGTERM, "", id="sigterm"),
    ],
)
def test_an_interrupted_build_stops_its_rehearsal(
    tmp_path: Path, sent: signal.Signals, code: int, said: str
) -> None:
    build = _start_build(tmp_path / "out")
    try:
        build.send_signal(sent)
        _, stderr = build.communicate(timeout=120)
    finally:
        if build.poll() is None:  # a build that hangs fails the test, and is not left behind
            build.kill()
            build.communicate()
    assert build.returncode == code and stderr.endswith(said), stderr
    assert "Traceback" not in stderr
    deadline = time.monotonic() + 10  # the build ended it; on Linux it would die with it anyway
    while rehearsals_of(build.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert rehearsals_of(build.pid) == []
    assert list(tmp_path.iterdir()) == []  # no bundle, no temporary folder


# -- opting out is recorded, and shown -------------------------------------------------------------


@pytest.fixture(scope="module")
def unrehearsed(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return build_bundle(
        EXAMPLES / "sequential" / "manifest.yaml",
        tmp_path_factory.mktemp("unrehearsed") / "b",
        rehearse=False,
    )


NOT_REHEARSED_LINE = (
    "not rehearsed: built with --no-rehearse, so no fresh interpreter loaded it before it was put "
    "in place"
)


def test_no_rehearse_is_recorded_in_the_lock(unrehearsed: Bundle) -> None:
    assert unrehearsed.lock.rehearsal == Rehearsal(rehearsed=False, examples=0)
    document = json.loads((unrehearsed.path / LOCK_FILENAME).read_text())
    assert document["rehearsal"] == {"rehearsed": False, "examples": 0}
    assert unrehearsed.to_json()["rehearsal"] == {
        "rehearsed": False,
        "examples": 0,
        "seconds": None,
        "waited": None,
        "startup": None,
    }


def test_inspect_says_whether_the_build_rehearsed(
    unrehearsed: Bundle, built: dict[str, Bundle]
) -> None:
    shown = run_bundle("inspect", str(unrehearsed.path))
    assert f"  {NOT_REHEARSED_LINE}" in shown.stdout.splitlines()
    rehearsed = run_bundle("inspect", str(built["custom_layer"].path))
    assert (
        "  rehearsed: a fresh interpreter loaded it at build and replayed 1 golden example"
        in rehearsed.stdout.splitlines()
    )
    as_json = json.loads(run_bundle("inspect", str(unrehearsed.path), "--json").stdout)
    assert as_json["rehearsal"] == {"rehearsed": False, "examples": 0}


def test_verify_notes_a_bundle_built_without_rehearsal(unrehearsed: Bundle) -> None:
    result = run_bundle("verify", str(unrehearsed.path))
    assert result.returncode == 0, result.stdout
    assert f"  note: {NOT_REHEARSED_LINE}" in result.stdout.splitlines()
    as_json = json.loads(run_bundle("verify", str(unrehearsed.path), "--json").stdout)
    assert as_json["ok"] and as_json["rehearsal"] == {"rehearsed": False, "examples": 0}


def test_a_lock_from_before_rehearsals_verifies_and_says_nothing_of_them(
    unrehearsed: Bundle, tmp_path: Path
) -> None:
    old = tmp_path / "old"
    shutil.copytree(unrehearsed.path, old)
    lock = json.loads((old / LOCK_FILENAME).read_text())
    del lock["rehearsal"]  # provenance: outside the digest, so the lock stays sealed
    (old / LOCK_FILENAME).write_text(json.dumps(lock))
    verified = run_bundle("verify", str(old))
    inspected = run_bundle("inspect", str(old))
    assert verified.returncode == 0, verified.stdout
    assert "rehearsed" not in verified.stdout + inspected.stdout
    assert json.loads(run_bundle("verify", str(old), "--json").stdout)["rehearsal"] is None


# -- the command line ------------------------------------------------------------------------------


def test_cli_refuses_an_unloadable_layout_in_one_line(tmp_path: Path) -> None:
    """Even with the manifest's paths on the user's PYTHONPATH: a service does not have them."""
    manifest = write_project(tmp_path, **HELPERS_LAYOUT)  # type: ignore[arg-type]
    env = cli_env(PYTHONPATH=str(tmp_path / "src"))
    result = run_bundle("build", str(manifest), "-o", str(tmp_path / "out"), env=env)
    assert result.returncode == 1
    expected = refused(manifest, HELPERS_REASON, HELPERS_REMEDY)
    assert result.stderr == f"bundle: error: {expected}\n"
    assert not (tmp_path / "out").exists()


def test_cli_no_rehearse_builds_and_reports_it(tmp_path: Path) -> None:
    out = tmp_path / "out"
    manifest = str(EXAMPLES / "sequential" / "manifest.yaml")
    result = run_bundle("build", manifest, "-o", str(out), "--no-rehearse", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["rehearsal"] == {
        "rehearsed": False,
        "examples": 0,
        "seconds": None,
        "waited": None,
        "startup": None,
    }
    assert rehearsals_of(os.getpid()) == []


def test_build_help_explains_the_rehearsal() -> None:
    result = run_bundle("build", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "--no-rehearse do not load the bundle in a fresh interpreter" in text
    assert "BUNDLER_REHEARSAL_TIMEOUT (seconds, default 300)" in text
