"""A forecaster built on keras-tcn's TCN layer (a real package from PyPI)."""
