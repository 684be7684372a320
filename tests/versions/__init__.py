"""Tests of bundler/versions/."""
