"""acme_extras: a second package of custom layers, for ``unloadable.yaml``."""

__version__ = "0.1.0"
