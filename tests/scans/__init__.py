"""Tests of bundler/scans/."""
