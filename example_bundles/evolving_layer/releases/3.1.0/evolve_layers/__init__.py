"""evolve_layers 3.1.0: 3.0.0 plus the 1.x -> 2.0 adapter again, so 1.x bundles load
through the chain 1.x -> 2.0.0 -> 3.0.0.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from bundler import adapter

__version__ = "3.1.0"


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


@adapter("evolve>Blend", versions="<2.0.0", to="2.0.0")
def blend_1_to_2(config: dict[str, Any]) -> dict[str, Any]:
    config["mix"] = config.pop("alpha")
    config.setdefault("clip", None)
    return config
