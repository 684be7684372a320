"""evolve_layers 3.0.0: the blend becomes two weights, ``{"gain_weight", "skip_weight"}``.

It ships the migration from 2.x only: the 1.x -> 2.0 adapter was dropped, so a bundle built with
1.x cannot be adapted by this release (it is ``incompatible``; 3.1.0 restores the chain).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from bundler import adapter

__version__ = "3.0.0"


@keras.saving.register_keras_serializable(package="evolve")
class Blend(keras.layers.Layer):
    def __init__(
        self,
        gain_weight: float = 0.5,
        skip_weight: float = 0.5,
        clip: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.gain_weight = float(gain_weight)
        self.skip_weight = float(skip_weight)
        self.clip = clip

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.gain = self.add_weight(name="gain", shape=(input_shape[-1],), initializer="ones")

    def call(self, inputs: Any) -> Any:
        out = self.gain_weight * (inputs * self.gain) + self.skip_weight * inputs
        return out if self.clip is None else ops.clip(out, -self.clip, self.clip)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "gain_weight": self.gain_weight,
            "skip_weight": self.skip_weight,
            "clip": self.clip,
        }


@adapter("evolve>Blend", versions=">=2.0.0 <3.0.0", to="3.0.0")
def blend_2_to_3(config: dict[str, Any]) -> dict[str, Any]:
    mix = config.pop("mix")
    config.update(gain_weight=mix, skip_weight=1.0 - mix)
    return config
