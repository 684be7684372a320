"""deploy/: the serving image's recipe and the KServe manifests, checked without a cluster.

No cluster runs here, and no container either. What can be held without one is held: every
manifest is read into the kserve package's own models of its resource (generated from KServe's
OpenAPI schema, with Kubernetes' models for the pod parts), refusing any field they do not
declare; the InferenceService names the runtime and a storageUri; every container's arguments
are parsed by `bundle serve`'s own parser; the Containerfile runs as a numeric non-root user with
the bundles read-only. deploy/build-image.sh builds and checks the image itself, as root (minutes).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bundler.cli.parser import make_parser

from .conftest import ROOT

kserve_models = pytest.importorskip("kserve.models", reason="pip install kserve (the test extra)")
kubernetes_models = pytest.importorskip("kubernetes.client.models", reason="kserve brings it")

DEPLOY = ROOT / "deploy"
MANIFESTS = sorted((DEPLOY / "kserve").glob("*.yaml"))
# the resources deploy/ holds, by kind: their apiVersion and kserve's model of them
KINDS = {
    "InferenceService": ("serving.kserve.io/v1beta1", "V1beta1InferenceService"),
    "ClusterServingRuntime": ("serving.kserve.io/v1alpha1", "V1alpha1ClusterServingRuntime"),
}
PRIMITIVES: dict[str, type | tuple[type, ...]] = {
    "str": str, "int": int, "bool": bool, "float": (int, float), "object": object,
}  # fmt: skip


def _document(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict), path
    return document


def _model(value: Any, kind: str, where: str) -> Any:
    """``value`` read as the OpenAPI type ``kind`` the way kserve's client deserializes it, except
    that a field the model does not declare is an error here (the client drops it silently, and
    so would a typo such as ``storageURI``). Constructing each model runs its own checks
    (required fields)."""
    listed = re.fullmatch(r"[lL]ist\[(.+)\]", kind)  # kserve writes list[X], kubernetes List[X]
    if listed:
        assert isinstance(value, list), f"{where}: a list, not {value!r}"
        return [_model(item, listed[1], f"{where}[{i}]") for i, item in enumerate(value)]
    mapped = re.fullmatch(r"(?:dict\(|Dict\[)str, (.+)[)\]]", kind)
    if mapped:
        assert isinstance(value, dict), f"{where}: a mapping, not {value!r}"
        return {key: _model(item, mapped[1], f"{where}.{key}") for key, item in value.items()}
    if kind in PRIMITIVES:
        assert isinstance(value, PRIMITIVES[kind]), f"{where}: a {kind}, not {value!r}"
        return value
    model = getattr(kserve_models, kind, None) or getattr(kubernetes_models, kind)
    assert isinstance(value, dict), f"{where}: a {kind} mapping, not {value!r}"
    attributes = {key: attribute for attribute, key in model.attribute_map.items()}
    unknown = sorted(set(value) - set(attributes))
    assert unknown == [], f"{where}: {kind} has no field {unknown}"
    return model(
        **{
            attributes[key]: _model(item, model.openapi_types[attributes[key]], f"{where}.{key}")
            for key, item in value.items()
        }
    )


def _instructions() -> list[tuple[str, str]]:
    """The Containerfile as (INSTRUCTION, arguments), continuation lines joined."""
    text = (DEPLOY / "Containerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    found = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def _exec_form(keyword: str) -> list[str]:
    (value,) = [rest for word, rest in _instructions() if word == keyword]
    parsed = json.loads(value)
    assert isinstance(parsed, list)
    return [str(item) for item in parsed]


def _runtime() -> dict[str, Any]:
    return _document(DEPLOY / "kserve" / "clusterservingruntime.yaml")


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_every_manifest_is_a_valid_kserve_resource(path: Path) -> None:
    document = _document(path)
    api_version, model = KINDS[document["kind"]]
    assert document["apiVersion"] == api_version
    assert _model(document, model, path.name).metadata.name


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        pytest.param(
            "storageURI", "s3://x/", "kserve.spec.predictor.model: V1beta1ModelSpec has no field "
            "['storageURI']", id="misspelt-field",
        ),
        pytest.param(
            "args", "serve /mnt/models", "kserve.spec.predictor.model.args: a list, not "
            "'serve /mnt/models'", id="args-a-string",
        ),
    ],
)  # fmt: skip
def test_the_check_refuses_what_kserve_would_not_read(field: str, value: Any, message: str) -> None:
    document = _document(DEPLOY / "kserve" / "inferenceservice.yaml")
    document["spec"]["predictor"]["model"][field] = value
    with pytest.raises(AssertionError) as refused:
        _model(document, "V1beta1InferenceService", "kserve")
    assert str(refused.value).splitlines()[0] == message


def test_the_inference_service_names_the_runtime_and_a_storage_uri() -> None:
    runtime = _runtime()
    model = _document(DEPLOY / "kserve" / "inferenceservice.yaml")["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"] == "keras-bundler"
    formats = {entry["name"] for entry in runtime["spec"]["supportedModelFormats"]}
    assert model["modelFormat"]["name"] in formats
    assert re.fullmatch(r"(s3|gs|pvc|https?)://\S+", model["storageUri"]), model["storageUri"]


def _containers() -> list[Any]:
    """Each container that runs the image, with the bundle path it serves."""
    watch = _document(DEPLOY / "kserve" / "inferenceservice-watch.yaml")["spec"]["predictor"]
    return [
        *(pytest.param(c, "/mnt/models", id="runtime") for c in _runtime()["spec"]["containers"]),
        *(pytest.param(c, "/mnt/models/current", id="watch") for c in watch["containers"]),
    ]


@pytest.mark.parametrize(("container", "bundle"), _containers())
def test_each_container_runs_a_command_bundle_serve_accepts(
    container: dict[str, Any], bundle: str
) -> None:
    """The image's entrypoint is `bundle`; a container gives only its arguments."""
    assert "command" not in container and _exec_form("ENTRYPOINT") == ["bundle"]
    args = make_parser().parse_args(container["args"])
    assert (args.verb, args.bundle, args.host, args.port) == ("serve", [bundle], "0.0.0.0", 8080)
    assert [port["containerPort"] for port in container["ports"]] == [args.port]
    probe = container["readinessProbe"]["httpGet"]
    assert (probe["path"], probe["port"]) == ("/v2/health/ready", args.port)
    assert container["securityContext"]["runAsNonRoot"] is True


def test_the_image_serves_mnt_models_on_the_port_it_exposes() -> None:
    args = make_parser().parse_args(_exec_form("CMD"))
    served = (args.verb, args.bundle, args.host, args.port, args.grpc_port, args.no_grpc)
    assert served == ("serve", ["/mnt/models"], "0.0.0.0", 8080, 8081, False)
    exposed = [rest for word, rest in _instructions() if word == "EXPOSE"]
    assert exposed == [f"{args.port} {args.grpc_port}"]


def test_the_image_runs_as_a_numeric_non_root_user() -> None:
    """Numeric, so that Kubernetes' runAsNonRoot can check it; the last USER is the one run."""
    users = [rest for word, rest in _instructions() if word == "USER"]
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) != 0 and int(gid) != 0, users[-1]
    runs = [rest for word, rest in _instructions() if word == "RUN"]
    assert f"--uid {uid}" in runs[-1]  # the user exists, made in the image


def test_the_bundles_are_mounted_read_only() -> None:
    instructions = _instructions()
    user_at = [word for word, _ in instructions].index("USER")
    # the mount point is made by root before USER: the server cannot write into it even unmounted
    as_root = [rest for word, rest in instructions[:user_at] if word == "RUN"]
    assert any("mkdir -p /mnt/models" in rest for rest in as_root)
    text = (DEPLOY / "Containerfile").read_text()
    assert re.findall(r"-v \S+:/mnt/models(:\S+)?", text) == [":ro"]  # the example run
    watch = _document(DEPLOY / "kserve" / "inferenceservice-watch.yaml")["spec"]["predictor"]
    (mount,) = watch["containers"][0]["volumeMounts"]
    (volume,) = watch["volumes"]
    assert (mount["mountPath"], mount["readOnly"]) == ("/mnt/models", True)
    assert volume["persistentVolumeClaim"]["readOnly"] is True


def test_the_image_installs_our_wheel_by_its_path_not_a_name_from_an_index() -> None:
    (install,) = [rest for word, rest in _instructions() if word == "RUN" and "pip install" in rest]
    assert '"${wheel}[serve]"' in install and "wheel=$(ls /tmp/wheels/keras_bundler-" in install
    assert "keras-bundler[serve]" not in install


def test_the_image_script_is_valid_bash_that_builds_the_containerfile() -> None:
    script = DEPLOY / "build-image.sh"
    checked = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert (checked.returncode, checked.stderr) == (0, "")
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "\nset -euo pipefail\n" in text
    assert "deploy/Containerfile" in text and "--isolation chroot" in text
    assert " --pull=never " in text  # no base image from a registry: the debootstrapped one
