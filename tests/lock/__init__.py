"""Tests of bundler/lock/."""
