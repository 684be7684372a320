"""Compatibility: what is installed of each component, framework and op library, and the load plan
it decides."""
