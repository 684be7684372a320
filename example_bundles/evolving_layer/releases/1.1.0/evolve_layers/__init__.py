"""evolve_layers 1.1.0: adds an optional ``clip``; configs of 1.0.0 load unchanged (compatible)."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

__version__ = "1.1.0"


@keras.saving.register_keras_serializable(package="evolve")
class Blend(keras.layers.Layer):
    def __init__(self, alpha: float = 0.5, clip: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.alpha = float(alpha)
        self.clip = clip

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.gain = self.add_weight(name="gain", shape=(input_shape[-1],), initializer="ones")

    def call(self, inputs: Any) -> Any:
        out = self.alpha * (inputs * self.gain) + (1.0 - self.alpha) * inputs
        return out if self.clip is None else ops.clip(out, -self.clip, self.clip)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "alpha": self.alpha, "clip": self.clip}
