"""Loading: ``load_bundle`` and its Keras and graph paths, the golden examples, and verify's smoke
replay."""
