"""Components none of us wrote, from PyPI: keras-tcn and keras-hub, through build, verify and load.

keras-tcn 3.5.5 says ``__version__ = '3.5.4'``: the version that counts is the distribution's. Its
real 3.5.4 release, and 3.5.5 with its code changed under the same version, stand in for what a
service may have installed months later; each runs in a fresh process, where ``verify_bundle``'s
verdict is compared with what ``load_bundle`` then does. keras-hub's ``BertBackbone`` shows
coverage: the saved config names ``keras_hub.src.models.bert.bert_backbone``, which only the
package ``keras_hub`` (not its public path ``keras_hub.models``) covers.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bundler import Bundle, build_bundle
from bundler.errors import BuildError

from .conftest import EXAMPLES, cli_env, run_bundle

POLICIES = ("strict", "adapt", "fallback")

VERIFY_THEN_LOAD = """
import json, sys, warnings
import numpy as np
import bundler
from bundler.errors import BundleError

root = sys.argv[1]
out = {}
for policy in ("strict", "adapt", "fallback"):
    report = bundler.verify_bundle(root, policy=policy)
    smoke = bundler.verify_bundle(root, policy=policy, smoke=True)
    entry = {
        "verify": report.ok,
        "smoke": smoke.ok,
        "statuses": [c.status for c in report.plan.checks],
        "installed": report.plan.checks[0].installed,
        "problems": [str(p) for p in report.problems],
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            loaded = bundler.load_bundle(root, policy=policy)
        except BundleError as error:
            entry["error"] = type(error).__name__
            entry["message"] = str(error)
        else:
            with np.load(f"{root}/examples/generated.inputs.npz") as archive:
                x = archive[archive.files[0]]
            entry["mode"] = loaded.mode
            entry["predictions"] = np.asarray(loaded.predict(x)).tolist()
    out[policy] = entry
print(json.dumps(out))
"""

# state -> {policy: mode, or the error load_bundle raises}
EXPECTED = {
    "installed": dict.fromkeys(POLICIES, "keras"),
    "3.5.4": {
        "strict": "IncompatibleBundleError",
        "adapt": "IncompatibleBundleError",
        "fallback": "graph",
    },
    "comment": dict.fromkeys(POLICIES, "keras"),  # a comment is not code: still exact
    "changed": {
        "strict": "IncompatibleBundleError",
        "adapt": "ExampleMismatchError",
        "fallback": "graph",
    },
}


def _pip_target(folder: Path, requirement: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(folder),
         requirement],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.fixture(scope="module")
def tcn_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str | None]:
    """PYTHONPATH per state: what pip installed, its 3.5.4 release, 3.5.5 edited two ways."""
    folder = tmp_path_factory.mktemp("tcn")
    _pip_target(folder / "3.5.4", "keras-tcn==3.5.4")
    _pip_target(folder / "comment", "keras-tcn==3.5.5")
    shutil.copytree(folder / "comment", folder / "changed")
    source = folder / "comment" / "tcn" / "tcn.py"
    source.write_text("# a comment, and nothing else\n" + source.read_text())
    source = folder / "changed" / "tcn" / "tcn.py"
    text = source.read_text()
    tail = "            self.layers_outputs.append(x)\n        return x\n"
    assert text.count(tail) == 1
    source.write_text(text.replace(tail, tail.replace("return x", "return 2.0 * x")))
    return {
        "installed": None,
        **{state: str(folder / state) for state in EXPECTED if state != "installed"},
    }


@pytest.fixture(scope="module")
def outcomes(
    built: dict[str, Bundle], tcn_paths: dict[str, str | None]
) -> dict[str, dict[str, Any]]:
    root = str(built["tcn_forecaster"].path)

    def run(state: str) -> tuple[str, dict[str, Any]]:
        path = tcn_paths[state]
        env = cli_env(PYTHONPATH=path) if path else cli_env()
        completed = subprocess.run(
            [sys.executable, "-c", VERIFY_THEN_LOAD, root],
            env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert completed.returncode == 0, completed.stderr[-3000:]
        return state, json.loads(completed.stdout.strip().splitlines()[-1])

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, EXPECTED))


def test_tcn_pins_the_distribution_version_not_its_stale_dunder_version(
    built: dict[str, Bundle],
) -> None:
    import tcn

    assert tcn.__version__ == "3.5.4"  # what keras-tcn 3.5.5 says of itself
    component = built["tcn_forecaster"].lock.components[0]
    assert (component.module, component.version, component.distribution) == (
        "tcn",
        "3.5.5",
        "keras-tcn",
    )
    assert component.objects == ("Custom>TCN",)
    assert list(component.sources) == ["tcn/tcn.py"]
    env = run_bundle("env")
    assert "keras-tcn==3.5.5" in env.stdout.splitlines()


def test_tcn_builds_with_a_generated_golden_example(built: dict[str, Bundle]) -> None:
    bundle = built["tcn_forecaster"]
    assert [e.name for e in bundle.lock.examples] == ["generated"]
    assert any("generated from the model's input spec (seed 0)" in n for n in bundle.notes)


@pytest.mark.parametrize("state", list(EXPECTED))
def test_tcn_loads_as_verify_predicted(
    outcomes: dict[str, dict[str, Any]], built: dict[str, Bundle], state: str
) -> None:
    """verify OK <=> load succeeds, per policy, in a fresh process with that keras-tcn."""
    root = Path(built["tcn_forecaster"].path)
    with np.load(root / "examples" / "generated.outputs.npz") as archive:
        golden = archive[archive.files[0]]
    for policy, expected in EXPECTED[state].items():
        entry = outcomes[state][policy]
        loaded = "error" not in entry
        assert entry.get("mode", entry.get("error")) == expected, (policy, entry)
        assert entry["smoke"] is loaded, (policy, entry["problems"])
        if state == "changed" and policy == "adapt":
            assert entry["verify"] is False  # not promised without replaying the examples
            assert any("run 'bundle verify --smoke'" in p for p in entry["problems"])
        else:
            assert entry["verify"] is loaded, (policy, entry["problems"])
        if loaded:
            np.testing.assert_allclose(np.array(entry["predictions"]), golden, rtol=1e-4, atol=1e-5)


def test_an_older_tcn_is_told_to_upgrade_with_the_pip_name(
    outcomes: dict[str, dict[str, Any]],
) -> None:
    entry = outcomes["3.5.4"]["adapt"]
    assert entry["installed"] == "3.5.4" and entry["statuses"][0] == "incompatible"
    assert "older than the pinned 3.5.5" in entry["message"]
    assert "upgrade tcn: pip install 'keras-tcn>=3.5.5,<4'" in entry["message"], entry["message"]
    assert "@adapter" not in entry["message"]


def test_same_version_changed_code_is_modified(outcomes: dict[str, dict[str, Any]]) -> None:
    entry = outcomes["changed"]["strict"]
    assert entry["installed"] == "3.5.5" and entry["statuses"][0] == "modified"
    assert "its code differs from the build's under the same version" in entry["message"]
    drift = outcomes["changed"]["adapt"]["message"]
    assert "example 'generated' drifted" in drift, drift


def test_same_version_with_a_comment_added_is_exact(outcomes: dict[str, dict[str, Any]]) -> None:
    """A comment is not a change to the code: verify OK under every policy, no replay needed."""
    for policy in POLICIES:
        entry = outcomes["comment"][policy]
        assert (entry["verify"], entry["statuses"][0], entry["mode"]) == (True, "exact", "keras")


def test_target_file_from_bundle_env_predicts_the_same(
    built: dict[str, Bundle], tcn_paths: dict[str, str | None], tmp_path: Path
) -> None:
    root = str(built["tcn_forecaster"].path)
    for state in ("3.5.4", "changed"):
        env = cli_env(PYTHONPATH=str(tcn_paths[state]))
        described = run_bundle("env", "--bundle", root, env=env)
        assert described.returncode == 0, described.stderr
        target = tmp_path / f"{state}.txt"
        target.write_text(described.stdout)
        expected_line = "keras-tcn==3.5.4" if state == "3.5.4" else "keras-tcn==3.5.5"
        assert expected_line in described.stdout.splitlines()
        result = run_bundle("verify", root, "--env", str(target), "--json")
        status = json.loads(result.stdout)["plan"]["checks"][0]["status"]
        assert status == ("incompatible" if state == "3.5.4" else "modified"), result.stdout
        assert result.returncode == 1


# -- keras-hub ------------------------------------------------------------------------------------


def _tiny_bert_manifest(tmp_path: Path, components: str) -> Path:
    text = (EXAMPLES / "tiny_bert" / "manifest.yaml").read_text()
    head, _, _ = text.partition("components:")
    shutil.copytree(EXAMPLES / "tiny_bert" / "src", tmp_path / "src")
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(head + components + "paths: [src]\n")
    return manifest


@pytest.mark.parametrize(
    "components",
    ["components: []\n", "components:\n  - module: keras_hub.models\n    version: '>=0.21'\n"],
    ids=["none", "public path"],
)
def test_a_component_that_does_not_cover_the_model_fails_the_build(
    built: dict[str, Bundle], tmp_path: Path, components: str
) -> None:
    import keras_hub

    manifest = _tiny_bert_manifest(tmp_path, components)
    with pytest.raises(BuildError) as caught:
        build_bundle(manifest, tmp_path / "out", rehearse=False)
    assert str(caught.value).splitlines() == [
        f"{manifest}: components: the model uses 'keras_hub>BertBackbone' from module "
        "'keras_hub.src.models.bert.bert_backbone', which no component covers",
        "  declare its package (a component covers its submodules too):",
        "    components:",
        "      - module: keras_hub",
        f'        version: "{keras_hub.__version__}"',
    ]
    assert not (tmp_path / "out").exists()


def test_a_declared_component_the_model_does_not_use_is_a_warning(
    built: dict[str, Bundle], tmp_path: Path
) -> None:
    components = (
        "components:\n  - module: keras_hub\n    version: '>=0.21'\n"
        "  - module: tcn\n    version: '>=3.5,<4'\n"
    )
    with pytest.warns(UserWarning, match="'tcn' is declared, but the model uses none"):
        manifest = _tiny_bert_manifest(tmp_path, components)
        bundle = build_bundle(manifest, tmp_path / "out", rehearse=False)
    assert [c.objects for c in bundle.lock.components] == [("keras_hub>BertBackbone",), ()]


def test_keras_hub_pins_the_files_of_the_code_the_backbone_runs(built: dict[str, Bundle]) -> None:
    """The backbone's own files, the layers its constructor makes, the activation they hold: not
    the rest of the 18 MB package."""
    component = built["tiny_bert"].lock.components[0]
    assert (component.module, component.distribution) == ("keras_hub", "keras-hub")
    assert component.objects == ("keras_hub>BertBackbone",)
    assert sorted(component.sources) == [
        "keras_hub/src/layers/modeling/position_embedding.py",
        "keras_hub/src/layers/modeling/transformer_encoder.py",
        "keras_hub/src/models/backbone.py",
        "keras_hub/src/models/bert/bert_backbone.py",
        "keras_hub/src/utils/keras_utils.py",
    ]


def test_keras_hub_bundle_verifies_and_loads_in_a_fresh_process(built: dict[str, Bundle]) -> None:
    root = str(built["tiny_bert"].path)
    verified = run_bundle("verify", root)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    result = subprocess.run(
        [sys.executable, "-c",
         "import bundler, sys; b = bundler.load_bundle(sys.argv[1], check_examples=True); "
         "print(b.mode, [c.status for c in b.compatibility.checks])", root],
        env=cli_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[0] == "keras"


HUB_OLDER = "0.31.0"
VERIFY_THEN_LOAD_CHECKED = """
import json, sys, warnings
import bundler
from bundler.errors import BundleError

root, out = sys.argv[1], {}
for policy in ("strict", "adapt", "fallback"):
    report = bundler.verify_bundle(root, policy=policy)
    entry = {"verify": report.ok, "statuses": [c.status for c in report.plan.checks]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:  # check_examples: the golden outputs, replayed through the path taken
            entry["mode"] = bundler.load_bundle(root, policy=policy, check_examples=True).mode
        except BundleError as error:
            entry["error"] = type(error).__name__
    out[policy] = entry
print(json.dumps(out))
"""


def test_an_older_keras_hub_is_refused_or_served_as_a_graph_as_verify_predicts(
    built: dict[str, Bundle], tmp_path: Path
) -> None:
    """keras-hub 0.31 from PyPI in front of a bundle built with a newer one: refused by strict
    and adapt, the SavedModel graph under fallback, its outputs the golden ones."""
    _pip_target(tmp_path / "hub", f"keras-hub=={HUB_OLDER}")
    root = str(built["tiny_bert"].path)
    completed = subprocess.run(
        [sys.executable, "-c", VERIFY_THEN_LOAD_CHECKED, root],
        env=cli_env(PYTHONPATH=str(tmp_path / "hub")), capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    outcome = json.loads(completed.stdout.strip().splitlines()[-1])
    assert outcome["strict"]["statuses"][0] == "incompatible"
    assert {policy: entry.get("mode", entry.get("error")) for policy, entry in outcome.items()} == {
        "strict": "IncompatibleBundleError",
        "adapt": "IncompatibleBundleError",
        "fallback": "graph",
    }
    for entry in outcome.values():  # verify OK <=> load succeeds
        assert entry["verify"] is ("error" not in entry)


def test_the_providing_distribution_is_found_beside_the_module_or_as_an_editable_install() -> None:
    """Without scanning every installed distribution: the metadata folders beside the module
    (keras-tcn's `tcn`), else an editable install (this project, from a clone)."""
    from bundler.compat.components import static_version

    tcn = static_version("tcn")
    assert (tcn.distribution, tcn.version) == ("keras-tcn", "3.5.5")
    own = static_version("bundler")
    assert own.distribution == "keras-bundler"  # installed with pip install -e
    local = static_version("acme_layers.layers", [str(EXAMPLES / "custom_layer" / "src")])
    assert (local.distribution, local.version) == (None, "1.2.0")  # no distribution: __version__
