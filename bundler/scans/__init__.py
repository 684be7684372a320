"""The safety scans: what a bundle's config, archive and graph may hold, judged without
TensorFlow."""
