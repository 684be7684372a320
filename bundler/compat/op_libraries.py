"""Op libraries: TensorFlow ops a graph may use beyond TensorFlow's own, and how a load gets them.

A Keras model holding a keras_hub tokenizer exports ops of tensorflow-text
(``RegexSplitWithOffsets``, ``CaseFoldUTF8``, ``FastWordpieceTokenizeWithOffsets``, ...).
TensorFlow knows them only once their library is loaded (``import tensorflow_text``), and the
graph scan judges them as it judges TensorFlow's own: by what each does. ``OP_LIBRARIES`` lists
the libraries bundler knows, each op with why it may be served. None of tensorflow-text's opens a
file: tokenizer models arrive as bytes held in the graph, vocabularies as lookup tables of the
graph (whose initialisers the scan judges like any other op). A kernel that parses a model from
those bytes trusts them as far as its own parser does; that, like any kernel bug, is the
library's.

The build records each library a graph uses in the lock (``op_libraries``: module, distribution,
the version built with, the versions that may load, the ops used). The load plan checks each is
installed, in a version that fits: a library like tensorflow-text is compiled for one TensorFlow
minor release (tensorflow-text 2.21 for TensorFlow 2.21), so the versions that fit are the
installed TensorFlow's series, and the hint names it (``pip install 'tensorflow-text==2.21.*'``).
The graph path imports exactly the modules the lock names before TensorFlow reads the graph, and
only known ones: loading imports nothing the lock does not name, and of the lock's op libraries
nothing bundler does not know to register ops.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass

from bundler.compat.components import distribution_version
from bundler.versions.ranges import framework_range
from bundler.versions.version import VersionError, parse_version


@dataclass(frozen=True)
class OpLibrary:
    """A library of TensorFlow ops: what to import, what to install, and its ops with why each
    may be served."""

    module: str
    distribution: str
    ops: dict[str, str]


def _family(reason: str, ops: str) -> dict[str, str]:
    return dict.fromkeys(ops.split(), reason)


TENSORFLOW_TEXT = OpLibrary(
    "tensorflow_text",
    "tensorflow-text",
    {
        **_family(
            "splits, normalises or case-folds strings in memory",
            "CaseFoldUTF8 NormalizeUTF8 NormalizeUTF8WithOffsetsMap FindSourceOffsets "
            "RegexSplitWithOffsets WhitespaceTokenizeWithOffsets "
            "TFText>WhitespaceTokenizeWithOffsetsV2 "
            "UnicodeScriptTokenizeWithOffsets SplitMergeTokenizeWithOffsets TokenizerFromLogits "
            "TFText>ByteSplitWithOffsets TFText>ByteSplitByOffsets TFText>Utf8Binarize "
            "TFText>NgramsStringJoin SentenceFragments SentenceFragmentsV2",
        ),
        **_family(
            "tokenises with a model passed as bytes of the graph, not a file",
            "FastWordpieceTokenizeWithOffsets TFText>FastWordpieceDetokenize FastBertNormalize "
            "PhraseTokenize TFText>PhraseDetokenize TFText>FastSentencepieceTokenize "
            "TFText>FastSentencepieceDetokenize",
        ),
        **_family(
            "a SentencePiece model made from the bytes of its 'model' attribute, in memory",
            "SentencepieceOp",
        ),
        **_family(
            "tokenises with a SentencePiece model the graph made in memory",
            "SentencepieceTokenizeOp SentencepieceTokenizeWithOffsetsOp SentencepieceDetokenizeOp "
            "SentencepieceIdToStringOp SentencepieceStringToIdOp SentencepieceVocabSizeOp",
        ),
        **_family(
            "tokenises with a lookup table of the graph (the table's initialiser is judged apart)",
            "WordpieceTokenizeWithOffsets",
        ),
        **_family(
            "trims, packs and masks token sequences in memory",
            "TFText>RoundRobinTrim TFText>RoundRobinGenerateMasks TFText>BoiseTagsToOffsets "
            "TFText>OffsetsToBoiseTags",
        ),
        **_family(
            "scores sequences and trees in memory", "ConstrainedSequence MaxSpanningTree RougeL"
        ),
    },
)

OP_LIBRARIES: dict[str, OpLibrary] = {library.module: library for library in (TENSORFLOW_TEXT,)}
_BY_OP = {op: library for library in OP_LIBRARIES.values() for op in library.ops}


def library_of(op: str) -> OpLibrary | None:
    """The known library that provides ``op``, or None (TensorFlow's own, or unknown)."""
    return _BY_OP.get(op)


def series(version: str) -> str | None:
    """``2.21`` for ``2.21.1``: the minor release a library built for TensorFlow must match."""
    try:
        parsed = parse_version(version)
    except VersionError:
        return None
    return f"{parsed.major}.{parsed.minor}"


def series_bounds(version: str) -> tuple[str, str] | None:
    """(``2.21.0``, ``2.22.0``) for ``2.21.1``: where that minor series starts and ends."""
    try:
        parsed = parse_version(version)
    except VersionError:
        return None
    return f"{parsed.major}.{parsed.minor}.0", f"{parsed.major}.{parsed.minor + 1}.0"


def install_hint(distribution: str, version: str) -> str:
    """``pip install 'tensorflow-text==2.21.*'``: the series of ``version``."""
    minor = series(version)
    pinned = f"=={minor}.*" if minor else f"=={version}"
    return f"pip install '{distribution}{pinned}'"


def import_op_libraries(modules: tuple[str, ...]) -> None:
    """Register the ops of the libraries a lock names (known ones only: ``ValueError`` for any
    other, ``ImportError`` when one is not installed or does not import)."""
    for module in modules:
        if module not in OP_LIBRARIES:
            raise ValueError(f"{module!r} is not an op library this version of bundler knows")
        importlib.import_module(module)


def locked_records(used: Mapping[str, tuple[str, ...]]) -> list[dict[str, object]]:
    """The lock's ``op_libraries`` for the ops a graph uses, by library module: the version
    installed now (the build's), and the versions that may load (never older, up to the next
    major, as for TensorFlow itself)."""
    records: list[dict[str, object]] = []
    for module in sorted(used):
        library = OP_LIBRARIES[module]
        version = distribution_version(library.distribution) or _imported_version(module)
        records.append(
            {
                "module": module,
                "distribution": library.distribution,
                "version": version,
                "compatible": framework_range(version),
                "ops": list(used[module]),
            }
        )
    return records


def _imported_version(module: str) -> str:
    version = getattr(importlib.import_module(module), "__version__", None)
    if not isinstance(version, str):
        raise ValueError(f"cannot tell which version of {module} is installed")
    return version
