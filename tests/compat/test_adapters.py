"""Adapters in-process: chains, and config and weight migration on a real saved model."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from bundler import Bundle
from bundler.compat.adapters import Adapter, apply_to_config, apply_to_weights, chain
from bundler.errors import AdapterError


def _rename(config: dict[str, Any]) -> dict[str, Any]:
    config["mix"] = config.pop("alpha")
    return config


A12 = Adapter("evolve>Blend", "<2.0.0", "2.0.0", "m", _rename)
A23 = Adapter("evolve>Blend", ">=2.0.0 <3.0.0", "3.0.0", "m", lambda c: c)


@pytest.mark.parametrize(
    ("installed", "adapters", "expected"),
    [
        ("2.0.0", [A12], [A12]),
        ("3.1.0", [A23, A12], [A12, A23]),  # order of declaration does not matter
        ("3.0.0", [A23], []),  # no first step from 1.x: incompatible
        ("2.5.0", [A12, A23], [A12, A23]),  # installed 2.5 < 3.0: the chain stops at the last
    ],
)
def test_chains_apply_in_order_from_the_pinned_version(
    installed: str, adapters: list[Adapter], expected: list[Adapter]
) -> None:
    assert chain(adapters, "1.0.0", installed) == expected


@pytest.fixture()
def saved(built: dict[str, Bundle]) -> tuple[dict[str, Any], bytes]:
    with zipfile.ZipFile(Path(built["evolving_layer"].path) / "model.keras") as archive:
        return json.loads(archive.read("config.json")), archive.read("model.weights.h5")


def _gain(weights: bytes, path: str = "layers/blend/vars/0") -> np.ndarray:
    with h5py.File(io.BytesIO(weights), "r") as h5:
        gain: np.ndarray = h5[path][()]
        return gain


def test_config_and_weights_of_the_adapted_layer_are_migrated(
    saved: tuple[dict[str, Any], bytes],
) -> None:
    config, weights = saved
    halve = Adapter("evolve>Blend", "<2.0.0", "2.1.0", "m", _rename, lambda v: [v[0] / 2])
    migrated, applied, edits = apply_to_config(config, {"evolve>Blend": [halve]})
    layer = next(x for x in migrated["config"]["layers"] if x["config"]["name"] == "blend")
    assert "mix" in layer["config"] and "alpha" not in layer["config"]
    assert applied == [halve.label]
    assert [edit.path for edit in edits] == ["layers/blend/"]
    new = apply_to_weights(weights, edits)
    np.testing.assert_array_equal(_gain(new), _gain(weights) / 2)
    np.testing.assert_array_equal(
        _gain(new, "layers/dense/vars/0"), _gain(weights, "layers/dense/vars/0")
    )


def test_a_failing_weights_migration_names_the_adapter(saved: tuple[dict[str, Any], bytes]) -> None:
    config, weights = saved
    broken = Adapter("evolve>Blend", "<2.0.0", "2.1.0", "m", _rename, lambda v: [v[7]])
    _, _, edits = apply_to_config(config, {"evolve>Blend": [broken]})
    with pytest.raises(AdapterError, match=r"failed on the weights of 'layers/blend/': IndexError"):
        apply_to_weights(weights, edits)
