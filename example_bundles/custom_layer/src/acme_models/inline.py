"""Factory for ``unloadable.yaml``: a layer defined in the factory module itself.

``Clip`` is registered where the model is made, not in a component, so a service that installs
the bundle's components (``acme_layers``) never imports it: nobody could load this model. The
build refuses it and says so (the README shows the refusal).
"""

from __future__ import annotations

from typing import Any

import keras
from acme_layers.layers import Scale


@keras.saving.register_keras_serializable(package="inline")
class Clip(keras.layers.Layer):
    """Clips its inputs to [-limit, limit]."""

    def __init__(self, limit: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.limit = float(limit)

    def call(self, inputs: Any) -> Any:
        return keras.ops.clip(inputs, -self.limit, self.limit)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "limit": self.limit}


def build() -> keras.Model:
    keras.utils.set_random_seed(42)
    inputs = keras.Input(shape=(4,), name="x")
    hidden = Scale(factor=0.5, name="scale")(inputs)
    outputs = keras.layers.Dense(1, name="y")(Clip(name="clip")(hidden))
    return keras.Model(inputs, outputs, name="inline_layer")
