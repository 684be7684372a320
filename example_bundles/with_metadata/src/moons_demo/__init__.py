"""Example package for the ``with_metadata`` bundle: a two-moons binary classifier."""

__version__ = "2.1.0"
