"""The lock document: the bundle's fixed names and digest, the ``Lock`` value object, its published
schema, and where a lock's paths may lead."""
