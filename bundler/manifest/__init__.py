"""The manifest: its fields (the published schema) and reading one strictly."""
