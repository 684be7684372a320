"""Bundles the serving tests need beyond the examples: dict inputs with several outputs, and
inputs of variable length (requests of different trailing shapes that must never share a call).

Built once a session by the ``serve_bundles`` fixture (``conftest.py``) from the factories below,
written into a scratch folder as the module ``serve_demo``.
"""

from __future__ import annotations

from pathlib import Path

from bundler import Bundle, build_bundle

FACTORIES = '''
import keras


def multi_io():
    """Two inputs by name, two outputs by name."""
    keras.utils.set_random_seed(0)
    a = keras.Input(shape=(2,), name="a")
    b = keras.Input(shape=(3,), name="b")
    joined = keras.layers.Concatenate()([a, b])
    score = keras.layers.Dense(1, name="score")(joined)
    probs = keras.layers.Dense(2, activation="softmax", name="probs")(joined)
    return keras.Model({"a": a, "b": b}, {"score": score, "probs": probs})


def sequence():
    """Steps of 3 features, any number of them: input shape [-1, -1, 3]."""
    keras.utils.set_random_seed(0)
    steps = keras.Input(shape=(None, 3), name="steps")
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Dense(4)(steps))
    return keras.Model(steps, keras.layers.Dense(2, name="out")(pooled))
'''

MANIFESTS = {
    "multi-io": "multi_io",
    "sequence": "sequence",
}


def build_serve_bundles(folder: Path) -> dict[str, Bundle]:
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "serve_demo.py").write_text(FACTORIES)
    bundles = {}
    for name, factory in MANIFESTS.items():
        manifest = folder / f"{name}.yaml"
        manifest.write_text(
            f"apiVersion: bundler/v1\nname: {name}\nversion: 1.0.0\n"
            f"model: {{factory: 'serve_demo:{factory}'}}\ncomponents: []\npaths: [src]\n"
        )
        bundles[name] = build_bundle(manifest, folder / name, rehearse=False)
    return bundles
