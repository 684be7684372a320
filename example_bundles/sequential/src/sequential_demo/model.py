"""Factory for the ``sequential-classifier`` example bundle.

``bundle build`` imports this module (``src`` is put on ``sys.path`` by the manifest's ``paths``)
and calls ``build(**model.args)``. The factory must return a *built* model, i.e. one with concrete
input shapes, because the bundle also exports a SavedModel serving signature from it.
"""

from __future__ import annotations

import keras
import numpy as np

SEED = 1234


def make_data(features: int, classes: int, samples: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs, one per class, generated from a fixed seed so builds are reproducible."""
    rng = np.random.default_rng(SEED)
    centers = rng.normal(scale=2.0, size=(classes, features))
    y = rng.integers(0, classes, size=samples)
    x = centers[y] + rng.normal(size=(samples, features))
    return x.astype("float32"), y.astype("int32")


def build(features: int = 8, classes: int = 3, epochs: int = 3) -> keras.Model:
    """Build, compile and briefly train a small Dense classifier.

    Args:
        features: number of input features.
        classes: number of output classes (softmax probabilities are returned).
        epochs: training epochs; a few are enough for this toy problem.
    """
    # Seeds Python, NumPy and the backend at once, so weights and shuffling are deterministic.
    keras.utils.set_random_seed(SEED)
    x, y = make_data(features, classes)

    model = keras.Sequential(
        [
            # An explicit Input gives the model concrete shapes (it is "built"), which the
            # SavedModel export in the bundle needs.
            keras.Input(shape=(features,), name="features"),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(classes, activation="softmax"),
        ],
        name="sequential_classifier",
    )
    # A non-default learning rate makes it easy to check that the optimizer state is preserved.
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=0.003),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model
