"""Tests of bundler/verify/."""
