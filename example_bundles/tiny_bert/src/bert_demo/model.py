"""The factory: keras_hub's BertBackbone at a size that builds in a second."""

from __future__ import annotations

from typing import Any

import keras
import keras_hub


def build(vocabulary_size: int = 64, seed: int = 7) -> Any:
    keras.utils.set_random_seed(seed)
    return keras_hub.models.BertBackbone(
        vocabulary_size=vocabulary_size,
        num_layers=1,
        num_heads=2,
        hidden_dim=8,
        intermediate_dim=16,
        max_sequence_length=12,
    )
