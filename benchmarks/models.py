"""Benchmark models: a stack of Dense layers around a custom layer, sized by parameter count.

This file is copied into a scratch folder as two modules (``bench_layers``: the versioned component
with the custom layer, ``bench_models``: the factory) so that a manifest can name them.
"""

from __future__ import annotations

import math
from typing import Any

import keras

__version__ = "1.0.0"


@keras.saving.register_keras_serializable(package="bench")
class Affine(keras.layers.Layer):  # type: ignore[misc]  # Keras has no type hints
    """``x * scale + shift`` per feature: a custom layer with weights of its own."""

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],), initializer="ones")
        self.shift = self.add_weight(name="shift", shape=(input_shape[-1],), initializer="zeros")

    def call(self, inputs: Any) -> Any:
        return inputs * self.scale + self.shift


def shape_for(params: int) -> tuple[int, int]:
    """(width, depth) of a Dense stack of about ``params`` float32 parameters."""
    depth = 4 if params < 5_000_000 else 8
    width = max(8, int(math.sqrt(params / depth)))
    return width, depth


def build(params: int = 1_000_000, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    width, depth = shape_for(params)
    inputs = keras.Input(shape=(width,), name="x")
    hidden = inputs
    for index in range(depth):
        hidden = keras.layers.Dense(width, activation="relu", name=f"dense_{index}")(hidden)
        if index == 0:
            hidden = Affine(name="affine")(hidden)
    outputs = keras.layers.Dense(1, name="y")(hidden)
    model = keras.Model(inputs, outputs, name=f"bench_{params}")
    # SGD without momentum keeps no slots, so the saved optimizer state stays small; building it
    # now saves it as a trained model's would be (no "skipping optimizer variables" on load).
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01), loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model
