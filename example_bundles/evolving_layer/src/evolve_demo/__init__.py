"""Factory of the evolving-layer example bundle."""
