"""Factory for the ``evolving-layer-demo`` bundle: ``Input(4) -> Dense(8) -> Blend -> Dense(1)``."""

from __future__ import annotations

import keras
import numpy as np
from evolve_layers import Blend

SEED = 11
FEATURES = 4


def make_data(samples: int = 256) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SEED)
    x = rng.normal(size=(samples, FEATURES)).astype("float32")
    y = (x @ np.array([1.0, -1.0, 0.5, 2.0]) + np.tanh(x[:, 1])).astype("float32")
    return x, y.reshape(-1, 1)


def build(epochs: int = 3) -> keras.Model:
    keras.utils.set_random_seed(SEED)
    x, y = make_data()
    inputs = keras.Input(shape=(FEATURES,), name="x")
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    hidden = Blend(alpha=0.25, name="blend")(hidden)
    outputs = keras.layers.Dense(1, name="y")(hidden)
    model = keras.Model(inputs, outputs, name="evolving_layer_demo")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.01), loss="mse")
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model
