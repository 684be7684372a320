"""Tests of bundler/compat/."""
