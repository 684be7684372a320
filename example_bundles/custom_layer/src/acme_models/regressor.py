"""Factory for the ``custom-layer-regressor`` example bundle.

The model uses ``acme_layers.layers.Scale`` and is compiled with ``acme_layers.layers.scaled_mse``,
so loading it later requires that module (the bundle's component) to be importable.
"""

from __future__ import annotations

import keras
import numpy as np
from acme_layers.layers import Scale, scaled_mse

SEED = 42
FEATURES = 4


def make_data(samples: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """A noisy, mildly non-linear target over 4 features, generated from a fixed seed."""
    rng = np.random.default_rng(SEED)
    x = rng.normal(size=(samples, FEATURES))
    w = np.array([1.5, -2.0, 0.5, 1.0])
    y = x @ w + 0.5 * np.sin(x[:, 0]) + 0.1 * rng.normal(size=samples)
    return x.astype("float32"), y.reshape(-1, 1).astype("float32")


def build(units: int = 16, epochs: int = 3) -> keras.Model:
    """Build, compile and briefly train ``Input(4) -> Dense -> Scale -> Dense(1)``.

    Args:
        units: width of the hidden Dense layer (and of the Scale vector).
        epochs: training epochs.
    """
    keras.utils.set_random_seed(SEED)
    x, y = make_data()

    # Functional API with an explicit Input: the model is built with concrete shapes, which the
    # SavedModel export in the bundle requires.
    inputs = keras.Input(shape=(FEATURES,), name="x")
    hidden = keras.layers.Dense(units, activation="relu")(inputs)
    hidden = Scale(factor=0.5, name="scale")(hidden)
    outputs = keras.layers.Dense(1, name="y")(hidden)
    model = keras.Model(inputs, outputs, name="custom_layer_regressor")

    # Passing the registered function (not a string) stores it as "acme>scaled_mse" in the
    # compile config, so the loss is restored on load as long as acme_layers.layers is imported.
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.01), loss=scaled_mse)
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model
