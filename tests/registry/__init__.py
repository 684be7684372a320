"""Tests of bundler/registry/."""
