"""A bundle as a CNCF ModelPack artifact: the media types, config document and annotations.

The ModelPack model-spec (``modelpack/model-spec``, ``specs-go/v1``) is how Harbor, Dragonfly,
KitOps, ``modctl`` and Docker Model Runner recognise a model in an OCI registry. A bundle maps onto
it file for file::

    artifactType  application/vnd.cncf.model.manifest.v1+json
    config        application/vnd.cncf.model.config.v1+json
                  {"descriptor": {"name", "version", "createdAt", "description"?},
                   "config": {"format": "keras" | "tensorflow"},
                   "modelfs": {"type": "layers", "diffIds": [one per layer]}}
    layers        one per file, raw (not tar): the layer digest is the file's sha256 from the lock,
                  so the diffId is the same digest and nothing is unpacked on either side
                  org.cncf.model.filepath and org.opencontainers.image.title: the bundle path
      model.keras, saved_model/**                 application/vnd.cncf.model.weight.v1.raw
      bundle.lock.json                            application/vnd.cncf.model.weight.config.v1.raw
      components/**, *.py                         application/vnd.cncf.model.code.v1.raw
      examples/**                                 application/vnd.cncf.model.dataset.v1.raw
      anything else, and the signature files      application/vnd.cncf.model.doc.v1.raw

The lock is a layer like any other file (the spec's config has no room for it), so a ModelPack
client that knows nothing of bundler pulls a folder that ``bundle verify`` accepts as it is; the
signature files travel as documentation layers for the same reason: a ModelPack client refuses a
layer whose media type is not one of the spec's, and ``model_signing verify`` must find
``model.sig`` in the pulled folder. Which layer is the lock or a signature is read from its path,
never from its media type.

Push writes raw layers only. Pull also reads the spec's ``.tar`` and ``.tar+gzip`` layers, which is
how ModelPack tools send a folder (``saved_model/``), unpacking them strictly and within the lock's
bounds (``bundler.registry.layer_archive``); the lock itself must be a raw layer, since it is what
bounds them.
"""

from __future__ import annotations

from typing import Any

from bundler.lock.layout import LOCK_FILENAME
from bundler.lock.model import Lock

ARTIFACT_TYPE = "application/vnd.cncf.model.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.cncf.model.config.v1+json"
FILEPATH = "org.cncf.model.filepath"
WEIGHT = "application/vnd.cncf.model.weight.v1.raw"
WEIGHT_CONFIG = "application/vnd.cncf.model.weight.config.v1.raw"
DOC = "application/vnd.cncf.model.doc.v1.raw"
CODE = "application/vnd.cncf.model.code.v1.raw"
DATASET = "application/vnd.cncf.model.dataset.v1.raw"
RAW_MEDIA_TYPES = frozenset({WEIGHT, WEIGHT_CONFIG, DOC, CODE, DATASET})
# a folder as one archive (bundler.registry.layer_archive unpacks them); zstd would need another
# dependency
TAR_MEDIA_TYPES = frozenset(kind.removesuffix(".raw") + ".tar" for kind in RAW_MEDIA_TYPES)
GZIP_MEDIA_TYPES = frozenset(kind + "+gzip" for kind in TAR_MEDIA_TYPES)
CONFIG_MAX_BYTES = 4 << 20


def media_type_of(path: str) -> str:
    """The spec's media type for the bundle file at ``path``."""
    top = path.split("/", 1)[0]
    if path == LOCK_FILENAME:
        return WEIGHT_CONFIG
    if path == "model.keras" or top == "saved_model" or path.endswith((".keras", ".h5")):
        return WEIGHT
    if top == "components" or path.endswith(".py"):
        return CODE
    if top == "examples":
        return DATASET
    return DOC


def config_document(lock: Lock, diff_ids: list[str]) -> dict[str, Any]:
    """The ModelPack config for a bundle whose layers have the digests ``diff_ids``, in order."""
    descriptor: dict[str, Any] = {
        "name": lock.name,
        "version": lock.version,
        "createdAt": lock.created,
    }
    if lock.description:
        descriptor["description"] = lock.description
    model_format = "keras" if lock.artifacts.keras else "tensorflow"
    return {
        "descriptor": descriptor,
        "config": {"format": model_format},
        "modelfs": {"type": "layers", "diffIds": diff_ids},
    }


def layer_path(layer: dict[str, Any]) -> object:
    """The path a layer is pulled to: the spec's file-path annotation, else the OCI title."""
    annotations = layer.get("annotations", {})
    return annotations.get(FILEPATH, annotations.get("org.opencontainers.image.title"))
