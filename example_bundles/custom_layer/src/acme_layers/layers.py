"""Custom Keras objects of the ``acme`` package: the ``Scale`` layer and the ``scaled_mse`` loss.

This module is the bundle's *component*. Registration with
``keras.saving.register_keras_serializable(package="acme")`` is what lets a saved model find these
objects again by name (``acme>Scale``, ``acme>scaled_mse``) simply because this module has been
imported -- no ``custom_objects=`` argument is needed at load time.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

# bundler reads the component version from the module itself, so it is declared here too
# (and kept equal to the package's ``acme_layers.__version__``).
__version__ = "1.2.0"


@keras.saving.register_keras_serializable(package="acme")
class Scale(keras.layers.Layer):
    """Multiplies each feature by a learned scale, times a fixed ``factor``.

    ``outputs = inputs * scale * factor``, where ``scale`` is a trainable vector with one entry per
    input feature (initialised to ones) and ``factor`` is a constant from the layer config.
    """

    def __init__(self, factor: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.factor = float(factor)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        # Weights are created lazily from the input shape, as usual for Keras layers.
        self.scale = self.add_weight(
            name="scale",
            shape=(input_shape[-1],),
            initializer="ones",
            trainable=True,
        )

    def call(self, inputs: Any) -> Any:
        return inputs * self.scale * self.factor

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        # Start from the base config (name, trainable, dtype, ...) so those round-trip as well;
        # only the constructor arguments of this class are added. Weights are saved separately.
        config = super().get_config()
        config.update({"factor": self.factor})
        return config


@keras.saving.register_keras_serializable(package="acme")
def scaled_mse(y_true: Any, y_pred: Any) -> Any:
    """Half the mean squared error (the 1/2 makes the gradient simply ``y_pred - y_true``)."""
    y_true = ops.cast(y_true, y_pred.dtype)
    return 0.5 * ops.mean(ops.square(y_pred - y_true), axis=-1)
