"""A BERT backbone from keras-hub, built from a tiny config (no weights downloaded)."""
