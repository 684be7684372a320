"""Bundler against the baselines users compare it with: ``python -m benchmarks``."""
