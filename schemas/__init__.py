"""The checked-in JSON Schemas, installed as the data package bundler.schemas."""
