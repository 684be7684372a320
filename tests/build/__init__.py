"""Tests of bundler/build/."""
