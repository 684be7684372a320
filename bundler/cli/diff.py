"""``bundle diff``: two bundles compared, rendered as one line per difference.

``bundler.diff.bundles`` computes the differences; this module only words them, section by section,
so that ``bundle diff`` and ``bundle build --check-reproducible`` (which names what two builds of
one manifest changed) print them alike. Every name and value read from a bundle is printed as one
line of inert text.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from bundler.cli.terminal import human_size, print_json
from bundler.errors import BundleError

if TYPE_CHECKING:
    from bundler.diff.bundles import BundleDiff


def _shown(value: Any, limit: int = 80) -> str:
    """A value read from a bundle, as one line of inert text: JSON, cut short, no control chars."""
    text = value if isinstance(value, str) and limit == 0 else None
    if text is None:
        text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
        if limit and len(text) > limit:
            text = text[: limit - 3] + "..."
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


def _name(text: str) -> str:
    return _shown(text, limit=0)


def _change_line(where: str, change: Any) -> str:
    if change.kind == "added":
        return f"  + {where}: {_shown(change.new)}"
    if change.kind == "removed":
        return f"  - {where}: {_shown(change.old)}"
    return f"  ~ {where}: {_shown(change.old)} -> {_shown(change.new)}"


def _shape(shape: Any) -> str:
    return "(" + ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


def diff_lines(result: BundleDiff, skip: tuple[str, ...] = ()) -> list[str]:
    """``bundle diff`` as text: one line per difference, under the section it belongs to.

    ``skip`` leaves sections out (``bundle build --check-reproducible`` shows only what differs
    between two builds of one manifest, not their identity)."""
    lines = []
    for mark, side in (("---", result.old), ("+++", result.new)):
        lines.append(
            f"{mark} {_name(side.label)}  {_name(side.name)} {_name(side.version)}  {side.digest}"
        )
    from bundler.diff.bundles import SECTIONS

    sections: dict[str, list[str]] = {name: [] for name in SECTIONS}
    for section in ("identity", "components", "frameworks", "metadata"):
        sections[section] = [_change_line(_name(c.path), c) for c in getattr(result, section)]
    for entry in result.files:
        sizes = {
            "added": human_size(entry.new_size or 0),
            "removed": human_size(entry.old_size or 0),
            "changed": f"{human_size(entry.old_size or 0)} -> {human_size(entry.new_size or 0)}",
        }[entry.kind]
        sections["files"].append(f"  {_MARKS[entry.kind]} {_name(entry.path)}  {sizes}")
    for layer in result.config:
        if layer.kind != "changed":
            sections["config"].append(f"  {_MARKS[layer.kind]} {_name(layer.layer)}")
        for key in layer.keys:
            sections["config"].append(_change_line(f"{_name(layer.layer)} {_name(key.path)}", key))
    for weight in result.weights:
        where = f"{_name(weight.layer)}/{_name(weight.variable)}"
        if weight.kind == "added":
            text = f"  + {where} {_shape(weight.new_shape)}"
        elif weight.kind == "removed":
            text = f"  - {where} {_shape(weight.old_shape)}"
        elif weight.max_abs_diff is None:
            text = (
                f"  ~ {where}: {_shape(weight.old_shape)} {weight.old_dtype} -> "
                f"{_shape(weight.new_shape)} {weight.new_dtype}"
            )
        else:
            text = f"  ~ {where} {_shape(weight.old_shape)}: max abs diff {weight.max_abs_diff:.3g}"
            if weight.old_dtype != weight.new_dtype:
                text += f" ({weight.old_dtype} -> {weight.new_dtype})"
        sections["weights"].append(text)
    for example in result.examples:
        if example.kind != "changed":
            sections["examples"].append(f"  {_MARKS[example.kind]} {_name(example.name)}")
            continue
        parts = ["inputs changed"] if example.inputs_changed else []
        for drift in example.drift:
            if drift.kind == "changed" and drift.old is None:
                parts.append(f"{_name(drift.path)} drifted, max abs diff {drift.new:.3g}")
            else:
                parts.append(_change_line(f"{_name(drift.path)} shape", drift).strip()[2:])
        parts += [f"{c.path} {c.old:g} -> {c.new:g}" for c in example.tolerances]
        sections["examples"].append(f"  ~ {_name(example.name)}: " + "; ".join(parts))
    for name, entries in sections.items():
        if entries and name not in skip:
            lines.append(name)
            lines.extend(entries)
    return lines


_MARKS = {"added": "+", "removed": "-", "changed": "~"}


def run_diff(args: argparse.Namespace) -> int:
    """``bundle diff``: what changed between two bundles, exit 0 same, 1 different, 2 trouble."""
    from bundler.diff.bundles import diff_bundles

    try:
        result = diff_bundles(args.old, args.new)
    except BundleError as error:  # like diff(1): 2 for trouble, whatever the trouble was
        error.exit_code = 2  # 1 says "different"; the error line is printed, escaped, by main
        raise
    if args.json:
        print_json(result.to_json())
    elif result.same:
        print(f"same  {_name(result.new.name)} {_name(result.new.version)}  {result.new.digest}")
    else:
        print("\n".join(diff_lines(result)))
    return 0 if result.same else 1
