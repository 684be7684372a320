"""acme_models: model factories that use the custom objects from ``acme_layers``."""
