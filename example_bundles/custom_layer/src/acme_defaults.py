"""Settings shared by the acme packages, kept as a loose module beside them in ``src/``.

It belongs to no package and no distribution: the build finds it because the manifest's ``paths``
put ``src/`` on ``sys.path``, and a service that installs ``acme_extras`` does not have it. That is
the mistake ``unloadable.yaml`` shows (see ``acme_extras.layers``).
"""

CLIP_LIMIT = 1.0
