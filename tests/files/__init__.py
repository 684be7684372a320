"""Tests of bundler/files/."""
