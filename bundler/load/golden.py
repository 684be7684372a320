"""Golden examples: inputs and the outputs they gave at build time, stored as ``.npz`` files.

Made at build (``run_example`` for the manifest's, ``generate_example`` from the model's input
spec when it declares none); replayed through a loaded model (``replay_examples``) by loads of
modified code, by ``load_bundle(check_examples=True)`` and by ``bundle verify --smoke``
(``bundler.load.smoke``). Both sides live here so that what the build stores and what a replay
compares cannot drift apart.

Outputs are stored and compared by name, whatever the model returns: a dict keeps its keys, a
list or tuple becomes ``output_0``, ``output_1``, ..., a single tensor ``output_0``. The build
stores them so, ``load_bundle`` and ``bundle verify --smoke`` replay them so, and ``bundle serve``
names its responses so; one function says it for all of them.
"""

from __future__ import annotations

import math
import os
import shutil
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bundler.errors import BuildError, BuildWarning, ManifestError
from bundler.lock.paths import open_bundle_file
from bundler.problems import Problem

if TYPE_CHECKING:  # a load replays examples without the manifest's models (pydantic, yaml)
    from bundler.manifest.reader import ManifestSource
    from bundler.manifest.schema import ExampleSpec

EXAMPLES_DIR = "examples"


def named_outputs(outputs: Any) -> dict[str, Any]:
    """Model outputs (a tensor, a list or a dict of them) as {name: numpy array}."""
    import numpy as np

    if isinstance(outputs, dict):
        return {str(key): np.asarray(value) for key, value in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return {f"output_{index}": np.asarray(value) for index, value in enumerate(outputs)}
    return {"output_0": np.asarray(outputs)}


def read_arrays(root: Path, relative: str, size: int | None = None) -> dict[str, Any]:
    """The arrays of a bundle's ``.npz`` file by name, read as every reader of a bundle reads:
    opened by its lock path inside the bundle (``bundle_paths.open_in_bundle``: no link, nothing
    that blocks, ``size`` bytes when given) and bounded before a byte is inflated
    (``check_arrays``). Never unpickles: object arrays are refused. OSError (an
    ``UnsafeFileError`` naming the entry at fault) or ValueError when it may not be read."""
    import numpy as np

    with open_bundle_file(root, relative, size) as stream:
        length = os.fstat(stream.fileno()).st_size
        with zipfile.ZipFile(stream) as members:
            check_arrays(members, length)
        stream.seek(0)
        archive = np.load(stream, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("is not a .npz archive")
        with archive:
            return {key: archive[key] for key in archive.files}


ARRAYS_RATIO = 8  # an .npz may inflate to this many times its size, plus ARRAYS_FLOOR
ARRAYS_FLOOR = 64 << 20
_NPY_HEADERS = {(1, 0): "read_array_header_1_0", (2, 0): "read_array_header_2_0"}


def check_arrays(archive: zipfile.ZipFile, size: int) -> None:
    """Refuse an ``.npz`` of ``size`` bytes that would take more than it holds to read (ValueError):
    members other than stored or deflated (bzip2 and LZMA inflate a read at once) or encrypted,
    members declaring together more than ``ARRAYS_RATIO`` times ``size`` plus ``ARRAYS_FLOOR``,
    and arrays whose ``.npy`` header declares more values than their member holds (numpy
    allocates the declared shape before it reads a value)."""
    import numpy as np

    bound, total = ARRAYS_FLOOR + ARRAYS_RATIO * size, 0
    for info in archive.infolist():
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ValueError(f"member {info.filename!r} uses compression {info.compress_type}")
        if info.flag_bits & 0x1:
            raise ValueError(f"member {info.filename!r} is encrypted")
        total += info.file_size
        if total > bound:
            raise ValueError(f"member {info.filename!r} takes the arrays beyond {bound} bytes")
        with archive.open(info) as member:
            version = np.lib.format.read_magic(member)
            reader = _NPY_HEADERS.get(version)
            if reader is None:
                raise ValueError(f"member {info.filename!r} is .npy format {version}")
            shape, _, dtype = getattr(np.lib.format, reader)(member)
        declared = math.prod(shape) * dtype.itemsize
        if dtype.hasobject or declared > info.file_size:
            what = "object arrays" if dtype.hasobject else f"{declared} bytes of values"
            raise ValueError(f"member {info.filename!r} declares {what} in {info.file_size} bytes")


def example_inputs(spec: ExampleSpec, model: Any, root: Path, where: str) -> dict[str, Any]:
    """An example's inputs as {model input name: float array}, whatever form the manifest used."""
    import numpy as np

    names = [tensor.name.split(":")[0] for tensor in model.inputs]
    if isinstance(spec.inputs, str):
        path = root / spec.inputs
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files}
        except (OSError, ValueError) as error:
            raise ManifestError(
                f"cannot read example inputs: {error}",
                path=where,
                field="inputs",
                value=spec.inputs,
            ) from error
        if len(arrays) == 1 and len(names) == 1:
            arrays = {names[0]: next(iter(arrays.values()))}
    elif isinstance(spec.inputs, dict):
        arrays = dict(spec.inputs)
    else:
        if len(names) != 1:
            raise ManifestError(
                f"the model has {len(names)} inputs {names}; give inputs as a mapping by name",
                path=where,
                field="inputs",
            )
        arrays = {names[0]: spec.inputs}
    if sorted(arrays) != sorted(names):
        raise ManifestError(
            f"inputs are named {sorted(arrays)}, the model's inputs are {names}",
            path=where,
            field="inputs",
        )
    dtypes = {tensor.name.split(":")[0]: tensor.dtype for tensor in model.inputs}
    try:
        return {key: np.asarray(value, dtype=str(dtypes[key])) for key, value in arrays.items()}
    except (TypeError, ValueError) as error:
        raise ManifestError(
            f"inputs are not a numeric array: {error}", path=where, field="inputs"
        ) from error


def run_example(model: Any, source: ManifestSource, index: int, workdir: Path) -> dict[str, Any]:
    assert source.manifest.examples is not None
    spec = source.manifest.examples[index]
    where = f"{source.path}: examples[{index}]"
    inputs = example_inputs(spec, model, source.root, where)
    try:
        return record_example(model, spec.name, inputs, spec.rtol, spec.atol, workdir)
    except Exception as error:
        raise BuildError(
            f"running example {spec.name!r} failed: {type(error).__name__}: {error}",
            path=source.path,
            field=f"examples[{index}]",
        ) from error


def record_example(
    model: Any, name: str, inputs: dict[str, Any], rtol: float, atol: float, workdir: Path
) -> dict[str, Any]:
    """Run ``inputs`` through the model and store both as the golden example ``name``."""
    import numpy as np

    feed = inputs if len(inputs) > 1 else next(iter(inputs.values()))
    outputs = named_outputs(model(feed, training=False))
    inputs_rel = f"{EXAMPLES_DIR}/{name}.inputs.npz"
    outputs_rel = f"{EXAMPLES_DIR}/{name}.outputs.npz"
    (workdir / EXAMPLES_DIR).mkdir(exist_ok=True)
    np.savez(workdir / inputs_rel, **inputs)
    np.savez(workdir / outputs_rel, **outputs)
    return {"name": name, "inputs": inputs_rel, "outputs": outputs_rel, "rtol": rtol, "atol": atol}


GENERATED_EXAMPLE = "generated"


GENERATED_SEED = 0


GENERATED_TOLERANCE = (1.0e-4, 1.0e-5)  # rtol, atol: other CPUs round float32 differently


def generated_inputs(model: Any) -> dict[str, Any]:
    """Inputs made from the model's input spec: batch 2, unknown sizes 4, seeded values.

    Floats are standard normal, integers 0 or 1 (valid indices for any embedding), booleans
    random, strings a fixed word. Enough to notice code that computes something else.
    """
    import numpy as np

    rng = np.random.default_rng(GENERATED_SEED)
    arrays: dict[str, Any] = {}
    for tensor in model.inputs:
        name = tensor.name.split(":")[0]
        shape = tuple(
            2 if i == 0 and d is None else (4 if d is None else int(d))
            for i, d in enumerate(tensor.shape)
        )
        dtype = str(tensor.dtype)
        if dtype.startswith(("float", "bfloat")):
            arrays[name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.startswith(("int", "uint")):
            arrays[name] = rng.integers(0, 2, size=shape).astype(dtype)
        elif dtype == "bool":
            arrays[name] = rng.random(shape) < 0.5
        elif dtype == "string":
            arrays[name] = np.full(shape, "bundler", dtype=object).astype(str)
        else:
            raise ValueError(f"input {name!r} has dtype {dtype}, which cannot be generated")
    return arrays


def generate_example(model: Any, workdir: Path) -> tuple[list[dict[str, Any]], str]:
    """The generated golden example, and the line the build reports about it."""
    try:
        inputs = generated_inputs(model)
        entry = record_example(model, GENERATED_EXAMPLE, inputs, *GENERATED_TOLERANCE, workdir)
    except Exception as error:
        shutil.rmtree(workdir / EXAMPLES_DIR, ignore_errors=True)
        message = (
            f"no golden example: generating one from the input spec failed "
            f"({type(error).__name__}: {error}); declare 'examples' in the manifest, so that "
            "loads of changed code can be checked"
        )
        warnings.warn(message, BuildWarning, stacklevel=2)
        return [], message
    return [entry], (
        f"golden example {GENERATED_EXAMPLE!r} generated from the model's input spec (seed "
        f"{GENERATED_SEED}); declare 'examples' to choose inputs, or 'examples: []' to opt out"
    )


# -- replay ---------------------------------------------------------------------------------------


class GoldenExample(Protocol):
    """A golden example as the lock lists it: its files and the tolerance of its replay."""

    @property
    def name(self) -> str: ...
    @property
    def inputs(self) -> str: ...
    @property
    def outputs(self) -> str: ...
    @property
    def rtol(self) -> float: ...
    @property
    def atol(self) -> float: ...


class ExampleList(Protocol):
    """The golden examples a lock lists."""

    @property
    def examples(self) -> Sequence[GoldenExample]: ...


class Replayable(Protocol):
    """What a replay needs of a loaded bundle (``bundler.load.loader.LoadedBundle``)."""

    @property
    def path(self) -> Path: ...
    @property
    def mode(self) -> str: ...
    @property
    def lock(self) -> ExampleList: ...
    def predict(self, x: Any) -> Any: ...


def replay_examples(loaded: Replayable) -> tuple[list[dict[str, Any]], list[Problem]]:
    """Run each golden example through the loaded model; compare with the stored outputs."""
    import numpy as np

    results: list[dict[str, Any]] = []
    problems: list[Problem] = []
    for example in loaded.lock.examples:
        try:
            inputs = read_arrays(loaded.path, example.inputs)
            expected = read_arrays(loaded.path, example.outputs)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            # allow_pickle stays off: an object array (a pickle) is refused, never unpickled
            problems.append(
                Problem(
                    example.inputs,
                    "smoke",
                    f"example {example.name!r} cannot be read: {type(error).__name__}: {error}",
                )
            )
            results.append({"name": example.name, "ok": False, "error": str(error)})
            continue
        if not inputs:
            problems.append(Problem(example.inputs, "smoke", f"example {example.name!r} is empty"))
            results.append({"name": example.name, "ok": False, "error": "no inputs"})
            continue
        feed: Any = inputs if len(inputs) > 1 else next(iter(inputs.values()))
        try:
            actual = named_outputs(loaded.predict(feed))
        except Exception as error:
            problems.append(
                Problem(example.inputs, "smoke", f"example {example.name!r} failed to run: {error}")
            )
            results.append({"name": example.name, "ok": False, "error": str(error)})
            continue
        worst_abs = 0.0
        worst_rel = 0.0
        diffs = []
        for key, want in expected.items():
            got = actual.get(key)
            if got is None or got.shape != want.shape:
                shape = None if got is None else list(got.shape)
                diffs.append(f"output {key!r}: shape {shape}, expected {list(want.shape)}")
                continue
            delta = np.abs(got.astype(np.float64) - want.astype(np.float64))
            worst_abs = max(worst_abs, float(delta.max(initial=0.0)))
            scale = np.abs(want.astype(np.float64))
            rel = delta / np.where(scale == 0, 1.0, scale)
            worst_rel = max(worst_rel, float(rel.max(initial=0.0)))
            if not np.allclose(got, want, rtol=example.rtol, atol=example.atol):
                index = np.unravel_index(int(np.argmax(delta - example.rtol * scale)), delta.shape)
                diffs.append(
                    f"output {key!r} at {tuple(int(i) for i in index)}: got {got[index]!r}, "
                    f"expected {want[index]!r} (max abs diff {float(delta.max()):.3g}, "
                    f"rtol {example.rtol:g}, atol {example.atol:g})"
                )
        ok = not diffs
        results.append(
            {
                "name": example.name,
                "ok": ok,
                "max_abs_diff": worst_abs,
                "max_rel_diff": worst_rel,
                "mode": loaded.mode,
            }
        )
        for diff in diffs:
            problems.append(
                Problem(example.outputs, "smoke", f"example {example.name!r} drifted: {diff}")
            )
    return results, problems
