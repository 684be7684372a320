"""A bundle's bytes on disk: hashing, reading through shard checks, atomic commits, and model.keras
laid out for reading in place."""
