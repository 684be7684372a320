"""Serving: KServe's model server over bundles, with batching, limits and verified reloads."""
