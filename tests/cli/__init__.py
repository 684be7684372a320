"""Tests of bundler/cli/."""
