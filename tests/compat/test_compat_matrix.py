"""Every cell of policy x installed state, each state in a fresh process with its release.

The evolving_layer example bundle pins ``evolve_layers`` 1.0.0; its releases stand in for what a
service may have installed months later:

| installed | status       | strict  | adapt            | fallback         |
| 1.0.0     | exact        | keras   | keras            | keras            |
| 1.1.0     | compatible   | keras   | keras            | keras            |
| 2.0.0     | adapted      | refused | keras (adapted)  | keras (adapted)  |
| 3.1.0     | adapted      | refused | keras (chain)    | keras (chain)    |
| 3.0.0     | incompatible | refused | refused          | graph            |
| nothing   | missing      | refused | refused          | graph            |
| 1.0.0 with call() reordered      | modified | refused | keras   | keras     |
| 1.0.0 with call() doubled        | modified | refused | refused | graph     |
| 1.0.0, and Keras 3.12 (PyPI)     | exact    | refused | refused | graph     |

The last three show identity beyond the version number: the same version with other code
(``modified``: loads only once the golden examples replay the same; ``gain * x`` for ``x * gain``
does, twice the output does not), and a Keras older than the build's (which cannot read what 3.15
wrote: ``incompatible``, and the graph under fallback). A comment or a blank line is not other
code (``tests/build/test_source_identity.py``).

For each cell: the mode, the predictions (equal to the built model's within 1e-5), the refusal
text, and that `bundle verify --policy P` here, and `bundle verify --policy P --env FILE` on a
machine without the component, exit as `load_bundle` behaves: the same exit, except that without
`--smoke` verify cannot promise a modified component loads, and says so (exit 1); with `--smoke`
it replays the examples as the load does, and exits exactly as the load behaves.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bundler import Bundle, verify_bundle
from bundler.lock.layout import LOCK_FILENAME

from ..conftest import (
    EXAMPLES,
    CopyBundle,
    cli_env,
    run_bundle,
    run_python,
)
from ..hostile import reseal

RELEASES = EXAMPLES / "evolving_layer" / "releases"
POLICIES = ("strict", "adapt", "fallback")
V1_TO_2 = "evolve>Blend (<2.0.0 -> 2.0.0) by evolve_layers"
V2_TO_3 = "evolve>Blend (>=2.0.0 <3.0.0 -> 3.0.0) by evolve_layers"

# state -> (release on the path, status, {policy: mode or "refused"}, adaptations when adapted)
STATES: dict[str, tuple[str | None, str, dict[str, str], list[str]]] = {
    "exact": ("1.0.0", "exact", dict.fromkeys(POLICIES, "keras"), []),
    "compatible": ("1.1.0", "compatible", dict.fromkeys(POLICIES, "keras"), []),
    "adapted": (
        "2.0.0",
        "adapted",
        {"strict": "refused", "adapt": "keras", "fallback": "keras"},
        [V1_TO_2],
    ),
    "adapted-chain": (
        "3.1.0",
        "adapted",
        {"strict": "refused", "adapt": "keras", "fallback": "keras"},
        [V1_TO_2, V2_TO_3],
    ),
    "incompatible": (
        "3.0.0",
        "incompatible",
        {"strict": "refused", "adapt": "refused", "fallback": "graph"},
        [],
    ),
    "missing": (
        None,
        "missing",
        {"strict": "refused", "adapt": "refused", "fallback": "graph"},
        [],
    ),
    "modified-reordered": (
        "1.0.0+reordered",
        "modified",
        {"strict": "refused", "adapt": "keras", "fallback": "keras"},
        [],
    ),
    "modified-doubled": (
        "1.0.0+doubled",
        "modified",
        {"strict": "refused", "adapt": "refused-drift", "fallback": "graph"},
        [],
    ),
    "older-keras": (
        "1.0.0+keras-3.12.0",
        "exact",
        {"strict": "refused", "adapt": "refused", "fallback": "graph"},
        [],
    ),
}
MODIFIED = ("modified-reordered", "modified-doubled")
OLDER_KERAS = "3.12.0"

LOAD_EVERY_POLICY = """
import json, sys, warnings
import numpy as np
import bundler
from bundler.errors import BundleError

x = np.array(json.loads(sys.argv[2]), dtype="float32")
out = {}
for policy in ("strict", "adapt", "fallback"):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            loaded = bundler.load_bundle(sys.argv[1], policy=policy, check_examples=True)
        except BundleError as error:
            out[policy] = {"error": type(error).__name__, "message": str(error)}
            continue
    out[policy] = {
        "mode": loaded.mode,
        "predictions": np.asarray(loaded.predict(x)).tolist(),
        "adaptations": list(loaded.adaptations),
        "statuses": [c.status for c in loaded.compatibility.checks],
        "warnings": [str(w.message) for w in caught if w.category.__name__ == "FallbackWarning"],
    }
print(json.dumps(out))
"""


_VARIANTS: dict[str, str] = {}  # "1.0.0+doubled" -> its PYTHONPATH, made by the `variants` fixture


def release_env(release: str | None) -> dict[str, str]:
    """A service with that release of evolve_layers installed (on its path), or none at all."""
    if release is None:
        return cli_env()
    return cli_env(PYTHONPATH=_VARIANTS.get(release) or str(RELEASES / release))


@pytest.fixture(scope="module", autouse=True)
def variants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Release 1.0.0 changed under the same version, and beside a real older Keras from PyPI."""
    folder = tmp_path_factory.mktemp("variants")
    original = (RELEASES / "1.0.0" / "evolve_layers" / "__init__.py").read_text()
    edits = {
        "reordered": original.replace(
            "return self.alpha * (inputs * self.gain)",
            "return self.alpha * (self.gain * inputs)",
        ),
        "doubled": original.replace(
            "return self.alpha * (inputs * self.gain)",
            "return 2.0 * self.alpha * (inputs * self.gain)",
        ),
    }
    for label, text in edits.items():
        assert text != original
        package = folder / label / "evolve_layers"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(text)
        _VARIANTS[f"1.0.0+{label}"] = str(folder / label)
    keras_dir = folder / "keras"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(keras_dir),
         f"keras=={OLDER_KERAS}"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-2000:]
    _VARIANTS[f"1.0.0+keras-{OLDER_KERAS}"] = f"{RELEASES / '1.0.0'}{os.pathsep}{keras_dir}"
    return dict(_VARIANTS)


@pytest.fixture(scope="module")
def evolving(built: dict[str, Bundle]) -> Path:
    return Path(built["evolving_layer"].path)


@pytest.fixture(scope="module")
def inputs_and_expected(evolving: Path) -> tuple[list[list[float]], np.ndarray]:
    """The golden inputs, and the outputs the factory's model gave for them at build time."""
    with np.load(evolving / "examples" / "smoke.inputs.npz") as archive:
        x = archive[archive.files[0]]
    with np.load(evolving / "examples" / "smoke.outputs.npz") as archive:
        expected = archive[archive.files[0]]
    return x.tolist(), expected


@pytest.fixture(scope="module")
def loads(
    evolving: Path, inputs_and_expected: tuple[list[list[float]], np.ndarray]
) -> dict[str, dict[str, Any]]:
    """state -> policy -> what load_bundle did, one fresh process per state (two at a time)."""
    x, _ = inputs_and_expected

    def run(state: str) -> tuple[str, dict[str, Any]]:
        completed = subprocess.run(
            [sys.executable, "-c", LOAD_EVERY_POLICY, str(evolving), json.dumps(x)],
            env=release_env(STATES[state][0]),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert completed.returncode == 0, completed.stderr[-3000:]
        return state, json.loads(completed.stdout.strip().splitlines()[-1])

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, STATES))


@pytest.fixture(scope="module")
def target_files(evolving: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`bundle env --bundle B` as each deploy target would print it."""
    folder = tmp_path_factory.mktemp("targets")
    files = {}
    for state, (release, *_) in STATES.items():
        result = run_bundle("env", "--bundle", str(evolving), env=release_env(release))
        assert result.returncode == 0, result.stderr
        files[state] = folder / f"{state}.txt"
        files[state].write_text(result.stdout)
    return files


CELLS = [(state, policy) for state in STATES for policy in POLICIES]


@pytest.mark.parametrize(("state", "policy"), CELLS)
def test_load_bundle_in_each_cell(
    loads: dict[str, dict[str, Any]],
    inputs_and_expected: tuple[list[list[float]], np.ndarray],
    state: str,
    policy: str,
) -> None:
    _, status, modes, adaptations = STATES[state]
    outcome = loads[state][policy]
    if modes[policy] == "refused-drift":  # loaded, replayed, and the outputs were not the same
        assert outcome["error"] == "ExampleMismatchError", outcome
        assert "the code of evolve_layers 1.0.0 differs from the build's" in outcome["message"]
        assert "example 'smoke' drifted" in outcome["message"], outcome["message"]
        return
    if modes[policy] == "refused":
        assert outcome["error"] == "IncompatibleBundleError", outcome
        message = outcome["message"]
        for words in ("component", "pinned", "allowed", "installed", "status", "evolve_layers"):
            assert words in message, message
        assert "1.0.0" in message and "^1.0.0" in message and status in message
        assert "to load it:" in message
        if status == "adapted":  # only strict refuses an adaptable bundle
            assert "use policy 'adapt'" in message
        elif state == "older-keras":
            assert re.search(rf"{OLDER_KERAS} +incompatible: older than the build's", message)
            assert "upgrade keras: pip install 'keras>=3.15.1,<4'" in message, message
        elif status == "modified":
            assert "its code differs from the build's under the same version" in message
            assert "reinstall the code the bundle was built with (evolve_layers 1.0.0" in message
        else:
            assert "make evolve_layers ^1.0.0 importable (code on the path" in message, message
            assert "policy 'fallback'" in message
        return
    assert "error" not in outcome, outcome.get("message")
    assert outcome["mode"] == modes[policy]
    assert outcome["statuses"][0] == status
    _, expected = inputs_and_expected
    np.testing.assert_allclose(np.array(outcome["predictions"]), expected, rtol=1e-5, atol=1e-5)
    if outcome["mode"] == "keras":
        assert outcome["adaptations"] == adaptations
        assert outcome["warnings"] == []
    else:
        assert outcome["adaptations"] == []
        assert len(outcome["warnings"]) == 1 and "SavedModel" in outcome["warnings"][0]
        why = {
            "incompatible": "no adapter from 1.0.0",
            "missing": "not installed",
            "modified": "example 'smoke' drifted",
            "exact": "older than the build's",
        }[status]
        assert why in outcome["warnings"][0], outcome["warnings"][0]


def _verify_exits(evolving: Path, target_files: dict[str, Path]) -> dict[tuple[str, str, str], int]:
    """Exit codes of `bundle verify --policy P`, here (with the release) and for --env FILE;
    for the modified states also `--smoke` here."""
    jobs: list[tuple[tuple[str, str, str], tuple[str, ...], dict[str, str]]] = []
    for state, policy in CELLS:
        release = STATES[state][0]
        here = ("verify", str(evolving), "--policy", policy)
        jobs.append(((state, policy, "here"), here, release_env(release)))
        target = (*here, "--env", str(target_files[state]))
        jobs.append(((state, policy, "target"), target, cli_env()))  # no component on this path
        if state in MODIFIED:
            jobs.append(((state, policy, "smoke"), (*here, "--smoke"), release_env(release)))

    def run(
        job: tuple[tuple[str, str, str], tuple[str, ...], dict[str, str]],
    ) -> tuple[tuple[str, str, str], int]:
        key, args, env = job
        result = run_bundle(*args, env=env)
        assert "Traceback" not in result.stderr, result.stderr
        if key[0] in MODIFIED and key[1] == "adapt" and key[2] != "smoke":
            assert "run 'bundle verify --smoke' to replay them here" in result.stdout, result.stdout
        return key, result.returncode

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, jobs))


def test_verify_policy_and_env_exit_as_load_bundle_behaves(
    evolving: Path, target_files: dict[str, Path], loads: dict[str, dict[str, Any]]
) -> None:
    """verify OK <=> load succeeds, in every cell; without --smoke, a modified component under
    'adapt' is not promised (exit 1), whatever the replay would show."""
    exits = _verify_exits(evolving, target_files)
    wrong = []
    for state, policy in CELLS:
        loads_ok = "error" not in loads[state][policy]
        places = ("here", "target", "smoke") if state in MODIFIED else ("here", "target")
        for where in places:
            expected = 0 if loads_ok else 1
            if state in MODIFIED and policy == "adapt" and where != "smoke":
                expected = 1
            if exits[(state, policy, where)] != expected:
                wrong.append((state, policy, where, exits[(state, policy, where)], expected))
    assert not wrong, f"verify exit (got, expected) differs from load_bundle: {wrong}"


def test_verify_json_plan_matches_the_load(
    evolving: Path, loads: dict[str, dict[str, Any]]
) -> None:
    result = run_bundle(
        "verify", str(evolving), "--policy", "fallback", "--json", env=release_env("3.1.0")
    )
    report = json.loads(result.stdout)
    assert report["ok"] and report["plan"]["mode"] == loads["adapted-chain"]["fallback"]["mode"]
    component = report["plan"]["checks"][0]
    assert component["status"] == "adapted"
    assert component["adaptations"] == [V1_TO_2, V2_TO_3]


def test_target_file_carries_the_adapters_the_target_declares(
    target_files: dict[str, Path],
) -> None:
    lines = target_files["adapted-chain"].read_text().splitlines()
    assert "evolve_layers==3.1.0" in lines
    declared = [json.loads(line.split(" ", 2)[2]) for line in lines if "bundler-adapter" in line]
    assert {(d["versions"], d["to"]) for d in declared} == {
        ("<2.0.0", "2.0.0"),
        (">=2.0.0 <3.0.0", "3.0.0"),
    }
    assert "bundler-adapter" not in target_files["incompatible"].read_text().split("==3.0.0")[0]


def test_smoke_replays_examples_through_the_planned_path(evolving: Path) -> None:
    for release, policy, mode in (("2.0.0", "adapt", "keras"), (None, "fallback", "graph")):
        result = run_bundle(
            "verify", str(evolving), "--smoke", "--policy", policy, "--json",
            env=release_env(release),
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        report = json.loads(result.stdout)
        assert [(e["name"], e["ok"], e["mode"]) for e in report["smoke"]] == [("smoke", True, mode)]


def _drift(root: Path, delta: float) -> None:
    path = root / "examples" / "smoke.outputs.npz"
    with np.load(path) as archive:
        outputs = {key: archive[key] + np.float32(delta) for key in archive.files}
    np.savez(path, **outputs)
    reseal(root)


def test_drifting_examples_fail_smoke_and_check_examples_with_a_diff(
    copy_bundle: CopyBundle,
) -> None:
    root = copy_bundle("evolving_layer")
    _drift(root, 0.01)
    result = run_bundle("verify", str(root), "--smoke", env=release_env("2.0.0"))
    assert result.returncode == 1, result.stdout + result.stderr
    text = result.stdout + result.stderr
    assert "examples/smoke.outputs.npz" in text and "example 'smoke' drifted" in text
    assert "expected" in text and "max abs diff 0.01" in text and "rtol 1e-05" in text
    loaded = run_python(
        "import bundler, sys\n"
        "try:\n"
        f"    bundler.load_bundle({str(root)!r}, policy='fallback', check_examples=True)\n"
        "except bundler.BundleError as error:\n"
        "    print(type(error).__name__, error); sys.exit(3)\n",
        env=release_env(None),
    )
    assert loaded.returncode == 3, loaded.stderr[-2000:]
    assert loaded.stdout.startswith("ExampleMismatchError") and "drifted" in loaded.stdout


@pytest.mark.parametrize(
    ("share", "accepted"), [(0.9, True), (1.1, False)], ids=["just inside", "just past"]
)
def test_a_replay_holds_the_outputs_to_the_tolerance_the_lock_records(
    copy_bundle: CopyBundle, share: float, accepted: bool
) -> None:
    """Every stored output moved by ``share`` of what the lock allows it, atol + rtol * |value|:
    just inside the tolerance the replay passes, just past it the example has drifted."""
    root = copy_bundle("sequential")
    (example,) = json.loads((root / LOCK_FILENAME).read_text())["examples"]
    path = root / example["outputs"]
    with np.load(path) as archive:
        outputs = {key: archive[key] for key in archive.files}
    allowed = {key: example["atol"] + example["rtol"] * np.abs(v) for key, v in outputs.items()}
    np.savez(
        path, **{key: (v + share * allowed[key]).astype(v.dtype) for key, v in outputs.items()}
    )
    reseal(root)
    report = verify_bundle(root, smoke=True)
    assert [(e["name"], e["ok"]) for e in report.smoke] == [(example["name"], accepted)]
    if accepted:
        assert report.ok, report.problems
        return
    assert [(p.path, p.kind) for p in report.problems] == [(example["outputs"], "smoke")]
    message = report.problems[0].message
    assert message.startswith(f"example {example['name']!r} drifted: output "), message
    assert message.endswith(f", rtol {example['rtol']:g}, atol {example['atol']:g})"), message


def test_an_adapter_that_raises_is_a_clear_refusal(evolving: Path, tmp_path: Path) -> None:
    release = tmp_path / "2.0.1"
    shutil.copytree(RELEASES / "2.0.0", release)
    source = release / "evolve_layers" / "__init__.py"
    text = source.read_text().replace('__version__ = "2.0.0"', '__version__ = "2.0.1"')
    source.write_text(text.replace('config["mix"] = config.pop("alpha")', 'config["mix"] = 1 / 0'))
    result = run_python(
        "import bundler, sys\n"
        "try:\n"
        f"    bundler.load_bundle({str(evolving)!r})\n"
        "except bundler.BundleError as error:\n"
        "    print(type(error).__name__, error)\n"
        f"print(bundler.load_bundle({str(evolving)!r}, policy='fallback').mode)\n",
        env=cli_env(PYTHONPATH=str(release)),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    first, mode = result.stdout.strip().splitlines()[0], result.stdout.strip().splitlines()[-1]
    assert first.startswith("AdapterError") and V1_TO_2 in first, first
    assert "ZeroDivisionError" in first
    assert mode == "graph"


HALVED_GAIN_RELEASE = '''
"""evolve_layers 2.1.0: the variable is saved as half the gain (a change to the weights too)."""
from typing import Any

import keras

from bundler import adapter

__version__ = "2.1.0"


@keras.saving.register_keras_serializable(package="evolve")
class Blend(keras.layers.Layer):
    def __init__(self, mix: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mix = float(mix)

    def build(self, input_shape):
        self.half_gain = self.add_weight(name="half_gain", shape=(input_shape[-1],))

    def call(self, inputs):
        return self.mix * (inputs * 2.0 * self.half_gain) + (1.0 - self.mix) * inputs

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mix": self.mix}


def rename(config):
    config["mix"] = config.pop("alpha")
    return config


adapter("evolve>Blend", versions="<2.0.0", to="2.1.0", weights=WEIGHTS)(rename)
'''


def test_an_adapter_can_migrate_a_layers_weights_too(evolving: Path, tmp_path: Path) -> None:
    """With weights= the golden examples replay exactly; without it they drift (so it matters)."""
    variants = {"with": "lambda saved: [saved[0] / 2]", "without": "None"}
    for label, weights in variants.items():
        package = tmp_path / label / "evolve_layers"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(HALVED_GAIN_RELEASE.replace("WEIGHTS", weights))
    script = (
        "import bundler, sys\n"
        "try:\n"
        f"    loaded = bundler.load_bundle({str(evolving)!r}, check_examples=True)\n"
        "    print(loaded.mode, len(loaded.adaptations))\n"
        "except bundler.BundleError as error:\n"
        "    print(type(error).__name__, error)\n"
    )

    def run(label: str) -> str:
        result = run_python(script, env=cli_env(PYTHONPATH=str(tmp_path / label)))
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout.strip()

    with ThreadPoolExecutor(max_workers=2) as pool:
        outcome = dict(zip(variants, pool.map(run, variants), strict=True))
    assert outcome["with"] == "keras 1", outcome["with"]
    assert outcome["without"].startswith("ExampleMismatchError"), outcome["without"]


def test_load_plans_against_the_framework_this_process_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # once imported, the module's own __version__ decides (a tf-nightly or tensorflow-cpu install
    # has no "tensorflow" distribution); before that, the installed distribution's version
    import importlib.metadata
    import types

    import keras

    from bundler.compat.environments import ImportedEnvironment

    environment = ImportedEnvironment()
    assert environment.framework("keras") == keras.__version__
    monkeypatch.setitem(sys.modules, "keras", types.SimpleNamespace(__version__="9.0.0"))
    assert environment.framework("keras") == "9.0.0"
    monkeypatch.delitem(sys.modules, "keras")
    assert environment.framework("keras") == importlib.metadata.version("keras")
