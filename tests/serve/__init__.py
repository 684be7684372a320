"""Tests of bundler/serve/."""
