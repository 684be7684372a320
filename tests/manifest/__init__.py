"""Tests of bundler/manifest/."""
