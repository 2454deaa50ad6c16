"""Item embeddings from an id and side features (genres, year, text encodings)."""

from __future__ import annotations

import tensorflow as tf

from tfrec_attn.features.serializable import register
from tfrec_attn.features.vocab import PAD_INDEX


@register
class ItemFeatureEmbedding(tf.keras.layers.Layer):
    """``id embedding + W · features[index]`` per model item index; 0 at padding.

    The feature table (``[num_indices, feature_dim]``: genre multi-hot, year buckets, frozen
    text encodings; :func:`tfrec_attn.features.items.item_feature_table`) is a non-trainable
    weight: saved with the checkpoints and the SavedModel, filled once with
    :meth:`set_features`. An item the model does not know (OOV, index 1) reads the OOV id
    row and an all-zero feature row.

    Args:
        num_indices: int. Vocabulary size including padding (0) and OOV (1).
        embedding_dim: int.
        feature_dim: int. Width of the feature table (0: id only).
    """

    def __init__(self, num_indices: int, embedding_dim: int, feature_dim: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.num_indices = num_indices
        self.embedding_dim = embedding_dim
        self.feature_dim = feature_dim
        self.ids = tf.keras.layers.Embedding(
            num_indices, embedding_dim, embeddings_initializer=tf.keras.initializers.TruncatedNormal(stddev=0.02),
            name="ids")
        self.projection = tf.keras.layers.Dense(embedding_dim, use_bias=False, name="projection") \
            if feature_dim else None

    def build(self, input_shape):
        if self.feature_dim:
            self.features = self.add_weight("features", [self.num_indices, self.feature_dim],
                                            initializer="zeros", trainable=False)
        super().build(input_shape)

    def set_features(self, table) -> None:
        """Fills the feature table (float [num_indices, feature_dim])."""
        if not self.built:
            self.build(None)
        self.features.assign(tf.cast(table, self.features.dtype))

    def call(self, indices):
        out = self.ids(indices)
        if self.projection is not None:
            out = out + self.projection(tf.gather(self.features, indices))
        return out * tf.cast(tf.not_equal(indices, PAD_INDEX), out.dtype)[..., tf.newaxis]

    def get_config(self):
        return {**super().get_config(), "num_indices": self.num_indices, "embedding_dim": self.embedding_dim,
                "feature_dim": self.feature_dim}
