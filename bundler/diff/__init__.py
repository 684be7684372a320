"""Comparing two bundles: the change records, the lock's sections, the model's config and
weights."""
