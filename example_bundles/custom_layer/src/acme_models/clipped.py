"""Factory for ``unloadable.yaml``: the regressor's ``Scale`` layer, then ``Clip``."""

from __future__ import annotations

import keras
from acme_extras.layers import Clip
from acme_layers.layers import Scale


def build() -> keras.Model:
    keras.utils.set_random_seed(42)
    inputs = keras.Input(shape=(4,), name="x")
    hidden = Scale(factor=0.5, name="scale")(inputs)
    outputs = keras.layers.Dense(1, name="y")(Clip(name="clip")(hidden))
    return keras.Model(inputs, outputs, name="clipped")
