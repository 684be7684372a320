"""Tests of bundler/trust/."""
