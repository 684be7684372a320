"""Factory for the ``moons-classifier`` example bundle.

The numbers recorded in the manifest's ``metadata`` (data set, hyperparameters, metrics) describe
what this factory does with its default arguments; keep them in sync when changing either.
"""

from __future__ import annotations

import keras
import numpy as np

SEED = 7


def make_moons(
    samples: int = 512, noise: float = 0.1, seed: int = SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaving half circles (like ``sklearn.datasets.make_moons``), from a fixed seed.

    Implemented with NumPy so the example needs no extra dependency and no download.
    """
    rng = np.random.default_rng(seed)
    n_outer = samples // 2
    n_inner = samples - n_outer
    t_outer = rng.uniform(0.0, np.pi, n_outer)
    t_inner = rng.uniform(0.0, np.pi, n_inner)
    outer = np.stack([np.cos(t_outer), np.sin(t_outer)], axis=1)
    inner = np.stack([1.0 - np.cos(t_inner), 0.5 - np.sin(t_inner)], axis=1)
    x = np.concatenate([outer, inner]) + rng.normal(scale=noise, size=(samples, 2))
    y = np.concatenate([np.zeros(n_outer), np.ones(n_inner)])
    order = rng.permutation(samples)
    return x[order].astype("float32"), y[order].astype("float32")


def build(
    hidden: int = 16,
    learning_rate: float = 0.01,
    epochs: int = 20,
    batch_size: int = 32,
) -> keras.Model:
    """Build, compile and train a small MLP that separates the two moons.

    Args:
        hidden: width of the two hidden Dense layers.
        learning_rate: Adam learning rate.
        epochs: training epochs.
        batch_size: mini-batch size.

    Returns:
        A built model mapping ``(batch, 2)`` points to ``(batch, 1)`` probabilities of class 1.
    """
    keras.utils.set_random_seed(SEED)
    x, y = make_moons()

    model = keras.Sequential(
        [
            # Explicit Input: concrete shapes, so the bundle can export a SavedModel signature.
            keras.Input(shape=(2,), name="point"),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ],
        name="moons_classifier",
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0)
    return model
