"""Whether TensorFlow and Keras are installed, asked before a command that needs them, and the
words that install what is missing.

bundler installs without them (``pip install keras-bundler``): verify, inspect, env, schema, sign,
keygen, push and pull never import TensorFlow. Building, loading, replaying golden examples and
serving do; they call ``require_tensorflow`` first, so a light install answers with one line that
names the extra to install instead of an ``ImportError`` from deep inside Keras. The check looks
the packages up without importing them (``importlib.util.find_spec``), so it costs nothing where
they are installed; an installed but broken TensorFlow still fails later, with its own error.

Every hint that names an extra is ``install_hint``'s: the distribution is ``keras-bundler`` (the
name ``bundler`` on PyPI is another project's), while the import package stays ``bundler``.
"""

from __future__ import annotations

import importlib.util

from bundler.errors import MissingDependencyError

EXTRA = "tensorflow"
FRAMEWORKS = ("tensorflow", "keras")
DISTRIBUTION = "keras-bundler"


def install_hint(extra: str) -> str:
    """The command that installs bundler with ``extra``: ``pip install 'keras-bundler[oci]'``."""
    return f"pip install '{DISTRIBUTION}[{extra}]'"


def require_tensorflow(what: str) -> None:
    """Raise ``MissingDependencyError`` (exit 2) when ``what`` cannot run for lack of TensorFlow
    or Keras, naming the extra that installs them."""
    missing = [name for name in FRAMEWORKS if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingDependencyError(
            f"{what} needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
            f"not installed here: {install_hint(EXTRA)}"
        )
