"""evolve_layers 2.0.0: ``alpha`` is renamed ``mix`` (a breaking change), with an adapter for 1.x.

A 1.x config says ``{"alpha": 0.25}``; 2.0.0 refuses it (unknown argument ``alpha``), so the
release ships the migration that bundler applies to the serialized config before Keras sees it.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from bundler import adapter

__version__ = "2.0.0"


@keras.saving.register_keras_serializable(package="evolve")
class Blend(keras.layers.Layer):
    def __init__(self, mix: float = 0.5, clip: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mix = float(mix)
        self.clip = clip

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.gain = self.add_weight(name="gain", shape=(input_shape[-1],), initializer="ones")

    def call(self, inputs: Any) -> Any:
        out = self.mix * (inputs * self.gain) + (1.0 - self.mix) * inputs
        return out if self.clip is None else ops.clip(out, -self.clip, self.clip)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mix": self.mix, "clip": self.clip}


@adapter("evolve>Blend", versions="<2.0.0", to="2.0.0")
def blend_1_to_2(config: dict[str, Any]) -> dict[str, Any]:
    config["mix"] = config.pop("alpha")
    config.setdefault("clip", None)
    return config
