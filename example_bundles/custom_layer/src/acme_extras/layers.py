"""The ``Clip`` layer, a component of ``unloadable.yaml``, which no service can load.

It imports ``acme_defaults``, a loose module beside the packages in ``src/``. The build imports
it from the manifest's ``paths`` and builds the model; a service that installs ``acme_extras``
has no ``acme_defaults``, so importing this component fails there. The build's rehearsal (a fresh
interpreter with only the installed packages and the declared components) finds that out and
refuses the bundle (the README shows the refusal).
"""

from __future__ import annotations

from typing import Any

import keras
from acme_defaults import CLIP_LIMIT

__version__ = "0.1.0"


@keras.saving.register_keras_serializable(package="acme_extras")
class Clip(keras.layers.Layer):
    """Clips its inputs to [-limit, limit]."""

    def __init__(self, limit: float = CLIP_LIMIT, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.limit = float(limit)

    def call(self, inputs: Any) -> Any:
        return keras.ops.clip(inputs, -self.limit, self.limit)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "limit": self.limit}
