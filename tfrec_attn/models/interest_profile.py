"""The interest profile: the genre (category) distribution of a user's next items, predicted
from their interests — fine-grained labels for the whole user, not one interest."""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from tfrec_attn.features.serializable import register


def _normalized_exp(logits, axis: int):
    """The softmax over ``axis`` written out (exp of the logits less their max, over the sum):
    TF's grappler cannot size a ``Softmax`` op inside this head once it is saved and prints a
    warning at the first call of the serving signature; the written-out form is the same
    function without it."""
    shifted = tf.exp(logits - tf.reduce_max(logits, axis=axis, keepdims=True))
    return shifted / tf.reduce_sum(shifted, axis=axis, keepdims=True)


@register
class InterestProfileHead(tf.keras.Model):
    """``softmax(W relu(V [pooled interests; log history genres]) + log history genres)``.

    The user's interests are pooled by a learned attention over them; the log of the
    history's own (smoothed) genre distribution enters both the features and, as a skip,
    the logits, so an untrained head predicts the history's distribution and training
    learns where the next items drift from it.

    Args:
        embedding_dim: int. Width of an interest vector.
        num_genres: int. G.
        hidden_dim: int.
        dropout: float.

    Inputs (a dict):
        interests: float [b, K, embedding_dim] (K = 1: a one-vector model's query).
        history_genres: float [b, G]. The history's genre distribution (smoothed, > 0).

    Output: float [b, G], the predicted distribution of the next items' genres.

    Example:
        >>> head = InterestProfileHead(embedding_dim=64, num_genres=18)
        >>> head({"interests": queries, "history_genres": smoothed})  # [b, 18]
    """

    def __init__(self, embedding_dim: int, num_genres: int, hidden_dim: int = 64, dropout: float = 0.1, **kwargs):
        # === Layers ===
        score = tf.keras.layers.Dense(1, name="interest_score")
        hidden = tf.keras.layers.Dense(hidden_dim, activation="relu", name="hidden")
        drop = tf.keras.layers.Dropout(dropout, name="dropout")
        out = tf.keras.layers.Dense(num_genres, kernel_initializer="zeros", name="logits")

        # === Functional model ===
        interests = tf.keras.Input(shape=(None, embedding_dim), name="interests")
        history_genres = tf.keras.Input(shape=(num_genres,), name="history_genres")
        weights = _normalized_exp(score(interests), axis=1)  # [b, K, 1], over the K
        pooled = tf.reduce_sum(weights * interests, axis=1)
        log_history = tf.math.log(tf.maximum(history_genres, 1e-8))
        logits = out(drop(hidden(tf.concat([pooled, log_history], axis=-1)))) + log_history
        super().__init__(inputs={"interests": interests, "history_genres": history_genres},
                         outputs=_normalized_exp(logits, axis=-1), **kwargs)

        # === Config ===
        self.embedding_dim = embedding_dim
        self.num_genres = num_genres
        self.hidden_dim = hidden_dim
        self.dropout = dropout

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, "embedding_dim": self.embedding_dim,
                "num_genres": self.num_genres, "hidden_dim": self.hidden_dim, "dropout": self.dropout}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def smoothed_genres(counts, prior, smoothing: float):
    """The history's own genre distribution, smoothed towards the catalogue's: ``(counts +
    smoothing * prior) / (|counts| + smoothing)`` (what the head reads as ``history_genres``,
    in training and in the serving graph).

    Args:
        counts: float [b, G]. The genre mass of each history's items (each item's genres
            share a mass of 1).
        prior: float [G]. The catalogue's genre distribution.
        smoothing: float. The prior's weight, in items.
    """
    counts = tf.convert_to_tensor(counts, tf.float32)
    prior = tf.convert_to_tensor(prior, tf.float32)
    return (counts + smoothing * prior) / (tf.reduce_sum(counts, axis=1, keepdims=True) + smoothing)


@dataclasses.dataclass
class ServedProfile:
    """What the ``profile`` signature reads: the fitted head, the genre names, the genre table
    in the model's index space, the catalogue's prior and the smoothing weight
    (:meth:`tfrec_attn.training.interest_profile.InterestProfile.save` writes it,
    :func:`load_profile` reads it)."""

    head: object
    genres: list
    table: np.ndarray  # [num_indices, G], model index space
    prior: np.ndarray
    smoothing: float


def load_profile(directory: str) -> ServedProfile:
    """The profile a run saved (RUN/interest_profile/)."""
    import json
    import os

    with open(os.path.join(directory, "profile.json"), encoding="utf-8") as handle:
        saved = json.load(handle)
    head = InterestProfileHead.from_config(saved["head"])
    genres = len(saved["genres"])
    head({"interests": tf.zeros([1, 1, head.embedding_dim]), "history_genres": tf.fill([1, genres], 1.0 / genres)})
    head.load_weights(os.path.join(directory, "head")).expect_partial()
    return ServedProfile(head, saved["genres"], np.load(os.path.join(directory, "genre_table.npy")),
                         np.asarray(saved["prior"], np.float32), float(saved["smoothing"]))
