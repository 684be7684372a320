"""Example package for the ``sequential`` bundle: a plain Dense classifier, no custom objects."""

__version__ = "1.0.0"
