"""A model as files: its Keras config (JSON) + its weights (TF checkpoint).

A run directory holds ``model.json`` (``tf.keras.utils.serialize_keras_object`` of the
model: class and constructor arguments, towers included) next to
``checkpoints/final``. :func:`load_model` rebuilds the trained model from those two in any
process that has imported ``tfrec_attn`` (which registers the classes) — no trainer, no
training config, no data.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

MODEL_CONFIG = "model.json"
FINAL_WEIGHTS = os.path.join("checkpoints", "final")


def save_model_config(model, path: str) -> str:
    """Writes the model's serialized Keras config to ``path`` (JSON)."""
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(tf.keras.utils.serialize_keras_object(model), handle, indent=1)
    return path


def model_from_config_file(path: str):
    """A freshly initialised model (all weights created) from a :func:`save_model_config` file."""
    with open(path, encoding="utf-8") as handle:
        config = json.load(handle)
    model = tf.keras.utils.deserialize_keras_object(config)
    return model.build_weights()


def load_model(run_dir: str, weights: str = FINAL_WEIGHTS):
    """The trained model of a run directory (``model.json`` + ``checkpoints/final``).

    Args:
        run_dir: str. A training run's output directory.
        weights: str. Checkpoint prefix relative to ``run_dir``.
    """
    config = os.path.join(run_dir, MODEL_CONFIG)
    if not os.path.isfile(config):
        raise FileNotFoundError(f"{config}: no model config; is {run_dir} a finished training run?")
    model = model_from_config_file(config)
    model.load_weights(os.path.join(run_dir, weights)).expect_partial()
    return model
