"""Every served model is described: what ``/v2/models/NAME`` lists and what requests are checked
against. Real bundles, loaded as a server loads them; the three sources of a description (the
Keras model, the SavedModel's serving signature, the golden examples) must agree where each
can speak."""

from __future__ import annotations

from typing import Any

import pytest

from bundler import Bundle, load_bundle

from ..conftest import CopyBundle
from ..hostile import edit_lock

pytest.importorskip("kserve", reason="the serve extra is not installed")

from bundler.serve.describe import (
    Description,
    _from_examples,
    _from_saved_model,
    describe,
)


def tensors(description: Description) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return (
        [spec.to_json() for spec in description.inputs],
        [spec.to_json() for spec in description.outputs],
    )


SEQUENTIAL = (
    [{"name": "features", "datatype": "FP32", "shape": [-1, 8]}],
    [{"name": "output_0", "datatype": "FP32", "shape": [-1, 3]}],
)


def test_a_sequential_model_is_described(built: dict[str, Bundle]) -> None:
    """A Sequential loaded from ``.keras`` has no ``model.input``; its inputs are still known."""
    described = describe(load_bundle(built["sequential"].path))
    assert tensors(described) == SEQUENTIAL
    assert (described.source, described.feed) == ("keras", "single")


def test_the_signature_and_the_examples_describe_a_sequential_model_alike(
    built: dict[str, Bundle],
) -> None:
    """What describes a model Keras cannot (a subclassed one) agrees with Keras where it can."""
    loaded = load_bundle(built["sequential"].path)
    from_signature = _from_saved_model(loaded)
    from_examples = _from_examples(loaded)
    assert from_signature is not None and from_examples is not None
    assert tensors(from_signature) == SEQUENTIAL
    assert tensors(from_examples) == SEQUENTIAL
    assert (from_signature.source, from_examples.source) == ("signature", "examples")


def test_dict_inputs_and_several_outputs_are_described_by_name(
    serve_bundles: dict[str, Bundle],
) -> None:
    described = describe(load_bundle(serve_bundles["multi-io"].path))
    assert tensors(described) == (
        [
            {"name": "a", "datatype": "FP32", "shape": [-1, 2]},
            {"name": "b", "datatype": "FP32", "shape": [-1, 3]},
        ],
        [
            {"name": "score", "datatype": "FP32", "shape": [-1, 1]},
            {"name": "probs", "datatype": "FP32", "shape": [-1, 2]},
        ],
    )
    assert described.feed == "dict"


def test_variable_sizes_are_minus_one(serve_bundles: dict[str, Bundle]) -> None:
    described = describe(load_bundle(serve_bundles["sequence"].path))
    assert tensors(described) == (
        [{"name": "steps", "datatype": "FP32", "shape": [-1, -1, 3]}],
        [{"name": "output_0", "datatype": "FP32", "shape": [-1, 2]}],
    )


def test_the_graph_fallback_is_described_as_the_keras_model_is(copy_bundle: CopyBundle) -> None:
    """Under ``fallback`` a bundle Keras refuses is served as its SavedModel graph, described
    from the signature with the names the Keras path gives."""
    from bundler.errors import FallbackWarning

    bundle = copy_bundle("custom_layer")
    keras_path = describe(load_bundle(bundle))

    def pin_a_major_ahead(lock: dict[str, Any]) -> None:
        lock["components"][0].update(version="2.0.0", compatible=">=2.0.0 <3.0.0")

    edit_lock(bundle, pin_a_major_ahead)
    with pytest.warns(FallbackWarning):
        loaded = load_bundle(bundle, policy="fallback")
    assert loaded.mode == "graph"
    graph_path = describe(loaded)
    assert tensors(graph_path) == tensors(keras_path)
    assert graph_path.source == "signature"
