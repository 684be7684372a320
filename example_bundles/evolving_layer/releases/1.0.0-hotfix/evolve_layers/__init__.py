"""evolve_layers 1.0.0, hot-fixed in place: the same version number, a different call()."""

from __future__ import annotations

from typing import Any

import keras

__version__ = "1.0.0"


@keras.saving.register_keras_serializable(package="evolve")
class Blend(keras.layers.Layer):
    def __init__(self, alpha: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.alpha = float(alpha)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.gain = self.add_weight(name="gain", shape=(input_shape[-1],), initializer="ones")

    def call(self, inputs: Any) -> Any:
        return self.alpha * (inputs * self.gain) + (1.0 - self.alpha) * inputs * 0.5

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "alpha": self.alpha}
