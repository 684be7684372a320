"""Versions and ranges: semantic and PEP 440 versions in one order, npm's and pip's range grammars
over it."""
