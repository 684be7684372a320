"""Verification: reading the lock once, checking every file and scan, the verdict, and a bundle
described at a glance."""
