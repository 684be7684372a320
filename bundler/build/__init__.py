"""Building: a manifest to a bundle, rehearsed and committed atomically."""
