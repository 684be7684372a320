"""Tests of bundler/load/."""
