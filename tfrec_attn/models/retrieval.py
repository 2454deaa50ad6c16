"""Two-tower retrieval with a causal-transformer user tower (SASRec-style, TFRS-built).

User tower: history item embeddings (from the item tower, weights shared) + recency
positions -> causal transformer -> one embedding per position. Item tower: any layer
with the :mod:`tfrec_attn.layers.item_tower` interface. Score = dot product.
Training predicts the next item at every position with the configured softmax task.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrec_attn.features.vocab import FIRST_ITEM_INDEX
from tfrec_attn.layers.item_tower import IdItemTower
from tfrec_attn.layers.user_tower import UserTower, last_position
from tfrec_attn.tasks import build_task


def compact_history(ids: tf.Tensor, max_len: int) -> tf.Tensor:
    """Drops padding/OOV anywhere in each row, keeps the newest ``max_len``, right-pads with 0.

    Args:
        ids: int [b, H]. Model indices, oldest first.

    Returns:
        int [b, min(max(row lengths), max_len)] (at least one column).
    """
    dense = tf.ragged.boolean_mask(ids, ids >= FIRST_ITEM_INDEX)[:, -max_len:].to_tensor(0)
    width = tf.maximum(tf.shape(dense)[1], 1)
    return tf.pad(dense, [[0, 0], [0, width - tf.shape(dense)[1]]])


def build_item_tower(model_config, num_indices: int):
    kind = model_config.item_tower.type
    if kind == "id":
        return IdItemTower(num_indices, model_config.embedding_dim, name="item_tower")
    raise ValueError(f"model.item_tower.type={kind!r} is not available (choose: id)")


class SequentialRetrievalModel(tfrs.Model):
    """Transformer two-tower retrieval model.

    Args:
        num_indices: int. Item vocabulary size including padding (0) and OOV (1).
        model_config: ModelConfig.
        loss_config: LossConfig.
        item_counts: array [num_indices]. Training interactions per index (for sampled /
            in-batch losses; unused by the full softmax and at inference).
        static_shapes: bool. Keep padding positions in the loss with weight 0 instead of
            dropping them, so every tensor shape depends only on the batch shape (XLA).

    Example:
        >>> model = SequentialRetrievalModel(vocab.num_indices, config.model, config.loss, counts)
        >>> model.compile(tf.keras.optimizers.Adam(1e-3)); model.fit(dataset)
        >>> scores = model.score_items(history_indices)  # [b, num_indices - 2]
    """

    def __init__(self, num_indices: int, model_config, loss_config, item_counts=None,
                 static_shapes: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.static_shapes = static_shapes
        m = model_config
        self.num_indices = num_indices
        self.max_len = m.max_len
        self.item_tower = build_item_tower(m, num_indices)
        self.user_tower = UserTower(
            m.embedding_dim, m.max_len, m.num_blocks, m.num_heads, m.ffn_dim, m.dropout,
            m.dropout if m.attention_dropout < 0 else m.attention_dropout, m.norm_first,
            m.positional, name="user_tower")
        self.input_scale = float(m.embedding_dim) ** 0.5 if m.scale_embeddings else 1.0
        self.item_bias = tf.keras.layers.Embedding(
            num_indices, 1, embeddings_initializer="zeros", name="item_bias") if m.item_bias else None
        if self.item_bias is not None:
            self.item_bias.build((None,))  # its weight must exist before the optimizer is built
        self.future_weight = loss_config.future_weight
        counts = np.zeros(num_indices) if item_counts is None else np.asarray(item_counts)
        self.task = build_task(loss_config, counts)

    # -- towers -------------------------------------------------------------------------
    def encode(self, history, training=False, return_attention=False):
        """Per-position user embeddings of compact, right-padded ``history`` [b, L]."""
        mask = history >= FIRST_ITEM_INDEX
        embeddings = self.item_tower(history)
        if self.input_scale != 1.0:
            embeddings = embeddings * self.input_scale
        return self.user_tower(embeddings, mask, training=training, return_attention=return_attention)

    def _query(self, user):
        """With an item bias, queries get a constant 1 so that query . candidate = u . e + b."""
        if self.item_bias is None:
            return user
        return tf.concat([user, tf.ones_like(user[..., :1])], axis=-1)

    def candidate_vectors(self, indices):
        """Candidate vectors of item indices: the item embedding (+ its bias as a last coordinate)."""
        vectors = self.item_tower(indices)
        if self.item_bias is None:
            return vectors
        return tf.concat([vectors, tf.cast(self.item_bias(indices), vectors.dtype)], axis=-1)

    def _candidate_table(self):
        table = self.item_tower.all_embeddings()
        if self.item_bias is None:
            return table
        return tf.concat([table, tf.cast(self.item_bias.embeddings, table.dtype)], axis=-1)

    def call(self, history, training=False):
        """Query vector [b, d] (d + 1 with an item bias) from any history [b, H] of model
        indices (oldest first); score = query . candidate (see :meth:`item_embeddings`)."""
        history = compact_history(history, self.max_len)
        user = last_position(self.encode(history, training=training), history >= FIRST_ITEM_INDEX)
        return self._query(user)

    def explain_history(self, history):
        """Which history items the user embedding attends to.

        Args:
            history: int [b, H] model indices (any padding, OOV, length).

        Returns:
            float [b, H]: the last block's attention (mean over heads) of the last position
            over each input position; 0 for padding, OOV and items beyond ``max_len``.
        """
        compact = compact_history(history, self.max_len)
        mask = compact >= FIRST_ITEM_INDEX
        _, attention = self.encode(compact, return_attention=True)
        if not attention:
            return tf.zeros(tf.shape(history), tf.float32)
        weights = tf.reduce_mean(tf.cast(attention[-1], tf.float32), axis=1)  # [b, L, L]
        last = tf.maximum(tf.reduce_sum(tf.cast(mask, tf.int32), axis=1) - 1, 0)
        weights = tf.gather(weights, last, batch_dims=1)  # [b, L] (query = last position)
        # Map compact positions back to input positions.
        valid = history >= FIRST_ITEM_INDEX
        before = tf.cumsum(tf.cast(valid, tf.int32), axis=1, exclusive=True)
        dropped = tf.maximum(tf.reduce_sum(tf.cast(valid, tf.int32), axis=1, keepdims=True) - self.max_len, 0)
        position = before - dropped
        keep = valid & (position >= 0)
        picked = tf.gather(weights, tf.maximum(position, 0), batch_dims=1)
        return tf.where(keep, picked, 0.0)

    def item_embeddings(self):
        """Candidate vectors of the catalogue items, [num_indices - 2, d (+1 with item bias)]."""
        return self._candidate_table()[FIRST_ITEM_INDEX:]

    @tf.function(reduce_retracing=True)
    def score_items(self, history):
        """Dot-product scores [b, num_indices - 2] over the catalogue."""
        user = tf.cast(self(history), tf.float32)
        return tf.matmul(user, tf.cast(self.item_embeddings(), tf.float32), transpose_b=True)

    # -- training -----------------------------------------------------------------------
    def compute_loss(self, inputs, training=False):
        features, labels = inputs
        output = self._query(self.encode(features["history"], training=training))
        candidates = self._candidate_table()
        weights = None
        if labels.shape.rank == 3:  # [b, L, w]: the next w items of every position
            window = tf.shape(labels)[2]
            output = tf.repeat(output[:, :, tf.newaxis, :], window, axis=2)
            weights = tf.concat([tf.ones([1]), tf.fill([window - 1], float(self.future_weight))], 0)
            weights = tf.broadcast_to(weights, tf.shape(labels))
        valid = labels >= FIRST_ITEM_INDEX
        if weights is None:
            weights = tf.ones(tf.shape(labels))
        weights = weights * tf.cast(valid, tf.float32)
        dim = tf.shape(output)[-1]
        if self.static_shapes:
            return self.task(tf.reshape(output, [-1, dim]), tf.reshape(labels, [-1]), candidates,
                             weights=tf.reshape(weights, [-1]))
        uniform = labels.shape.rank == 2
        return self.task(tf.boolean_mask(output, valid), tf.boolean_mask(labels, valid), candidates,
                         weights=None if uniform else tf.boolean_mask(weights, valid))
