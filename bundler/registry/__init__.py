"""Registries: bundles pushed to and pulled from OCI registries, in bundler's own format and as CNCF
ModelPack artifacts."""
