"""The rating head: a biased baseline the network corrects (``mean + item bias + user bias``,
the user's bias read from the ratings in the history), in ``[rating_min, rating_max]``."""

from __future__ import annotations

import tensorflow as tf

from tfrec_attn.features.serializable import register
from tfrec_attn.features.vocab import FIRST_ITEM_INDEX


@register
class BiasedRatingHead(tf.keras.layers.Layer):
    """``rating = low + (high - low) * sigmoid(logit(base) + w · x)`` per candidate, where
    ``base = (mean + b_item + b_user - low) / (high - low)`` (clipped into (0, 1)).

    ``b_item`` is a learned per-item bias; ``b_user`` is not a learned weight (the ranker has
    no user ids): it is computed from the history, as the biased baseline estimates it —
    ``sum over rated history events of (rating - mean - b_item) / (count + shrinkage)`` — so a
    user who rates above the items' means gets a higher base. Without any rated event the
    base is ``mean + b_item`` and ``w · x`` (the network's features) must do the rest.

    Args:
        num_indices: int. Item vocabulary size.
        rating_min, rating_max, rating_mean: float. The range, and the training ratings' mean.
        shrinkage: float. Pseudo-count pulling a user's bias towards 0 (few ratings, small bias).

    Call arguments:
        x: float [b, C, u]. The network's features per candidate.
        history: int64 [b, H]. Model item indices (0 = padding).
        history_ratings: int64 [b, H]. Rating ids = rounded ratings (0 = unknown).
        candidates: int64 [b, C].

    Returns:
        float [b, C].
    """

    def __init__(self, num_indices: int, rating_min: float = 1.0, rating_max: float = 5.0,
                 rating_mean: float = 3.5, shrinkage: float = 10.0, **kwargs):
        super().__init__(**kwargs)
        self.num_indices = int(num_indices)
        self.rating_min, self.rating_max, self.rating_mean = float(rating_min), float(rating_max), float(rating_mean)
        self.shrinkage = float(shrinkage)
        self.item_bias = tf.keras.layers.Embedding(num_indices, 1, embeddings_initializer="zeros", name="item_bias")
        self.correction = tf.keras.layers.Dense(1, kernel_initializer="zeros", name="correction")

    def user_bias(self, history, history_ratings):
        """float [b]: the history's rating residuals over the item biases, shrunk."""
        known = (history_ratings > 0) & (history >= FIRST_ITEM_INDEX)
        weights = tf.cast(known, self.compute_dtype)
        residual = (tf.cast(history_ratings, self.compute_dtype) - self.rating_mean
                    - tf.squeeze(self.item_bias(history), -1)) * weights
        return tf.reduce_sum(residual, axis=1) / (tf.reduce_sum(weights, axis=1) + self.shrinkage)

    def call(self, x, history, history_ratings, candidates):
        span = self.rating_max - self.rating_min
        base = (self.rating_mean + tf.squeeze(self.item_bias(candidates), -1)
                + self.user_bias(history, history_ratings)[:, tf.newaxis] - self.rating_min) / span
        base = tf.clip_by_value(base, 0.01, 0.99)
        z = tf.math.log(base / (1.0 - base)) + tf.squeeze(tf.cast(self.correction(x), base.dtype), -1)
        return self.rating_min + span * tf.sigmoid(z)

    def get_config(self):
        return {**super().get_config(), "num_indices": self.num_indices, "rating_min": self.rating_min,
                "rating_max": self.rating_max, "rating_mean": self.rating_mean, "shrinkage": self.shrinkage}
