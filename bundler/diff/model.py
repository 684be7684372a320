"""The config and weights sections of ``bundle diff``: two ``model.keras`` files compared.

The config is compared per layer (by the layer's name), each layer's keys by key path; what is
outside the layers (compile config, inputs, outputs) is ``(model)``. The weights are compared per
variable without loading the model: shapes and dtypes from the HDF5 layout (``keras_weights``),
and for values the largest absolute difference. Contiguous variables (what Keras writes) are
mapped from both files ``WINDOW_BYTES`` at a time and compared in place on two threads,
``BLOCK_BYTES`` of values at a time, so memory stays flat whatever the model's size; others are
streamed through h5py. The weights file names a layer's group after its class (``dense_1``), the
config as the user did (``y``): variables are shown by the config's name.
"""

from __future__ import annotations

import mmap
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bundler.diff.changes import LayerChange, WeightChange, json_changes
from bundler.diff.keras_weights import H5Variable, KerasFile
from bundler.errors import UsageError

BLOCK_BYTES = 1 << 20  # values compared at a time, per bundle: a few blocks fit the CPU's cache
WINDOW_BYTES = 16 << 20  # mapped at a time, per bundle and thread: what bounds the memory
_IGNORED_CONFIG_KEYS = frozenset({"shared_object_id"})  # id() of an object in older bundles


def model_changes(
    old: KerasFile, new: KerasFile
) -> tuple[tuple[LayerChange, ...], tuple[WeightChange, ...]]:
    """The config and weights sections for two ``model.keras`` files, each opened and checked as
    ``KerasFile`` does (UsageError naming the file when one may not be read)."""
    with old as before, new as after:
        old_config, new_config = before.config(), after.config()
        config = tuple(_config_changes(old_config, new_config))
        try:
            weights = tuple(
                _weight_changes(before, after, _h5_names(old_config), _h5_names(new_config))
            )
        except (OSError, ValueError, KeyError, RuntimeError) as error:  # h5py, mmap
            raise UsageError(
                f"cannot compare the weights: {type(error).__name__}: {error}",
                path=f"{old.path} / {new.path}",
            ) from error
    return config, weights


def _layers(config: Any) -> tuple[dict[str, Any], Any]:
    """({layer name: layer config}, the model's config without its layers)."""
    inner = config.get("config") if isinstance(config, dict) else None
    if not isinstance(inner, dict) or not isinstance(inner.get("layers"), list):
        return {}, config
    layers = inner["layers"]
    named: dict[str, Any] = {}
    for index, layer in enumerate(layers):
        name = None
        if isinstance(layer, dict):
            name = (layer.get("config") or {}).get("name") or layer.get("name")
        named[str(name) if name is not None else f"#{index}"] = layer
    rest = dict(config)
    rest["config"] = {key: value for key, value in inner.items() if key != "layers"}
    return named, rest


def _config_changes(old: Any, new: Any) -> Iterator[LayerChange]:
    before, old_rest = _layers(old)
    after, new_rest = _layers(new)
    model = tuple(json_changes(old_rest, new_rest, ignore=_IGNORED_CONFIG_KEYS))
    if model:
        yield LayerChange("(model)", "changed", model)
    for name in list(before) + [n for n in after if n not in before]:
        if name not in after:
            yield LayerChange(name, "removed")
        elif name not in before:
            yield LayerChange(name, "added")
        else:
            keys = tuple(json_changes(before[name], after[name], ignore=_IGNORED_CONFIG_KEYS))
            if keys:
                yield LayerChange(name, "changed", keys)


def _snake_case(name: str) -> str:
    """Keras's ``naming.to_snake_case``, without importing Keras."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _h5_names(config: Any) -> dict[str, str]:
    """{h5 group of a top-level layer: the layer's name}.

    The weights file names a layer's group after its class (``layers/dense_1``: the second Dense
    layer), in the order of ``model.layers``; the config names it as the user did (``y``).
    """
    layers = (config.get("config") or {}).get("layers") if isinstance(config, dict) else None
    if not isinstance(layers, list):
        return {}
    used: dict[str, int] = {}
    names: dict[str, str] = {}
    for layer in layers:
        if not isinstance(layer, dict) or layer.get("class_name") == "InputLayer":
            continue
        base = _snake_case(str(layer.get("class_name", "")))
        if base in used:
            used[base] += 1
            base = f"{base}_{used[base]}"
        else:
            used[base] = 0
        name = (layer.get("config") or {}).get("name")
        if isinstance(name, str):
            names[base] = name
    return names


def _shown_layer(variable: H5Variable, names: dict[str, str]) -> str:
    head, _, rest = variable.layer.partition("/")
    if variable.path.startswith("layers/") and head in names:
        return "/".join(part for part in (names[head], rest) if part)
    return variable.layer


def _natural(path: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def _block_max(first: Any, second: Any, scratch: Any) -> float:
    """max |first - second| of two equal-length blocks, NaN if either side has a NaN."""
    import numpy as np

    out = scratch[: len(first)]
    if out.dtype == first.dtype == second.dtype:
        np.subtract(first, second, out=out)
    else:
        np.subtract(first.astype(np.float64), second.astype(np.float64), out=out)
    np.abs(out, out=out)
    return float(out.max()) if len(out) else 0.0


def _mapped_max(
    before: KerasFile, after: KerasFile, old: H5Variable, new: H5Variable, start: int, count: int
) -> float:
    """max |old - new| over one window of elements, read in place from both files."""
    import numpy as np

    exact = old.dtype == new.dtype and old.dtype.kind == "f" and old.dtype.itemsize >= 4
    step = max(1, BLOCK_BYTES // max(old.dtype.itemsize, new.dtype.itemsize))
    scratch = np.empty(min(step, count), dtype=old.dtype if exact else np.float64)
    first_map, first_at = before.mapped(old, start, count)
    second_map, second_at = after.mapped(new, start, count)
    try:
        first = np.frombuffer(first_map, dtype=old.dtype, count=count, offset=first_at)
        second = np.frombuffer(second_map, dtype=new.dtype, count=count, offset=second_at)
        largest = 0.0
        for at in range(0, count, step):
            block = _block_max(first[at : at + step], second[at : at + step], scratch)
            if block != block:
                return block
            largest = max(largest, block)
        return largest
    finally:
        del first, second  # the views go before their mappings
        first_map.close()
        second_map.close()


def _max_abs_diff(
    before: KerasFile,
    after: KerasFile,
    old: H5Variable,
    new: H5Variable,
    pool: ThreadPoolExecutor,
) -> float:
    """The largest absolute difference between two variables of one shape, streamed.

    Contiguous variables (what Keras writes) are compared where the page cache holds them,
    window by window on two threads: comparing costs about what reading does, so this keeps a
    diff near the time of reading both files, with a few windows in memory at any time."""
    import numpy as np

    total = int(np.prod(old.shape, dtype=np.int64))
    mappable = before.descriptor is not None and after.descriptor is not None
    mappable = mappable and hasattr(mmap, "PROT_READ")  # the POSIX mmap
    if mappable and old.offset is not None and new.offset is not None and total:
        window = max(1, WINDOW_BYTES // max(old.dtype.itemsize, new.dtype.itemsize))
        starts = range(0, total, window)
        if len(starts) == 1:
            return _mapped_max(before, after, old, new, 0, total)
        maxima = list(
            pool.map(
                lambda start: _mapped_max(
                    before, after, old, new, start, min(window, total - start)
                ),
                starts,
            )
        )
        return float("nan") if any(m != m for m in maxima) else max(maxima)
    count = max(1, BLOCK_BYTES // max(old.dtype.itemsize, new.dtype.itemsize))
    scratch = np.empty(count, dtype=np.float64)
    largest = 0.0
    for first, second in zip(before.blocks(old, count), after.blocks(new, count), strict=True):
        if len(first) > len(scratch):
            scratch = np.empty(len(first), dtype=np.float64)
        block = _block_max(first, second, scratch)
        if block != block:  # NaN on one side only, or different NaNs
            return block
        largest = max(largest, block)
    return largest


def _weight_changes(
    before: KerasFile, after: KerasFile, old_names: dict[str, str], new_names: dict[str, str]
) -> Iterator[WeightChange]:
    old, new = before.variables(), after.variables()
    with ThreadPoolExecutor(2, thread_name_prefix="bundler-diff") as pool:
        yield from _changed_weights(before, after, old, new, old_names, new_names, pool)


def _changed_weights(
    before: KerasFile,
    after: KerasFile,
    old: dict[str, H5Variable],
    new: dict[str, H5Variable],
    old_names: dict[str, str],
    new_names: dict[str, str],
    pool: ThreadPoolExecutor,
) -> Iterator[WeightChange]:
    for path in sorted(set(old) | set(new), key=_natural):
        if path not in new:
            gone = old[path]
            yield WeightChange(
                _shown_layer(gone, old_names),
                gone.variable,
                "removed",
                gone.shape,
                None,
                str(gone.dtype),
                None,
            )
            continue
        if path not in old:
            made = new[path]
            yield WeightChange(
                _shown_layer(made, new_names),
                made.variable,
                "added",
                None,
                made.shape,
                None,
                str(made.dtype),
            )
            continue
        a, b = old[path], new[path]
        layer = _shown_layer(b, new_names)
        if a.shape != b.shape or a.dtype.kind not in "fiub" or b.dtype.kind not in "fiub":
            if (a.shape, a.dtype) != (b.shape, b.dtype):
                yield WeightChange(
                    layer, a.variable, "changed", a.shape, b.shape, str(a.dtype), str(b.dtype)
                )
            continue
        largest = _max_abs_diff(before, after, a, b, pool)
        if largest != 0.0 or a.dtype != b.dtype:
            yield WeightChange(
                layer,
                a.variable,
                "changed",
                a.shape,
                b.shape,
                str(a.dtype),
                str(b.dtype),
                largest,
            )
