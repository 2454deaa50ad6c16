"""Item towers: map model item indices to embeddings.

Every item tower exposes the same two calls, so the user tower, the losses and the
retrieval index never need to know what is inside:

* ``tower(indices)`` -> embeddings ``[..., embedding_dim]`` (used for history items and labels),
* ``tower.all_embeddings()`` -> ``[num_indices, embedding_dim]`` (the candidate table).

The BERT text tower will fuse a text embedding into the same interface.
"""

from __future__ import annotations

import tensorflow as tf

from tfrec_attn.layers.attention import register

ITEM_TOWER_TYPES = ("id",)  # the text and hybrid towers join here


@register
class IdItemTower(tf.keras.layers.Layer):
    """An embedding per item index (0 = padding, 1 = out-of-vocabulary).

    Args:
        num_indices: int. Vocabulary size including padding and OOV.
        embedding_dim: int.
    """

    def __init__(self, num_indices: int, embedding_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.num_indices = num_indices
        self.embedding_dim = embedding_dim
        self.embedding = tf.keras.layers.Embedding(
            num_indices, embedding_dim, name="item_id_embedding",
            embeddings_initializer=tf.keras.initializers.TruncatedNormal(stddev=0.02))

    def call(self, indices):
        return self.embedding(indices)

    def all_embeddings(self):
        if not self.embedding.built:
            self.embedding.build((None,))
        return tf.convert_to_tensor(self.embedding.embeddings)

    def get_config(self):
        return {**super().get_config(), "num_indices": self.num_indices, "embedding_dim": self.embedding_dim}


def build_item_tower(kind: str, num_indices: int, embedding_dim: int):
    """The item tower named by ``model.item_tower.type`` (one of :data:`ITEM_TOWER_TYPES`)."""
    if kind == "id":
        return IdItemTower(num_indices, embedding_dim, name="item_tower")
    raise ValueError(f"model.item_tower.type must be one of {', '.join(ITEM_TOWER_TYPES)}, got {kind!r}")
