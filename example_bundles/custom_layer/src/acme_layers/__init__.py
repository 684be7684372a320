"""acme_layers: custom Keras objects shared by the acme models.

Deliberately light: it does not import Keras, so reading the package version is cheap. The custom
objects live in ``acme_layers.layers``, which is the component the bundle pins.
"""

__version__ = "1.2.0"
