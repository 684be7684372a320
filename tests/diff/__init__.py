"""Tests of bundler/diff/."""
