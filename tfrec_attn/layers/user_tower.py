"""The user tower: a causal transformer over the user's history (a functional Keras model)."""

from __future__ import annotations

import tensorflow as tf

from tfrec_attn.layers.attention import (
    POSITIONAL_TYPES,
    PositionalEmbedding,
    TransformerBlock,
    attention_mask,
    register,
)


@register
class UserTower(tf.keras.Model):
    """History item embeddings -> one user embedding per position.

    The output at position ``t`` depends only on items ``<= t`` (causal), so training can
    predict the next item at every position at once, and serving reads the last one.

    Args:
        embedding_dim: int.
        max_len: int. Longest history (positions of the positional embedding).
        num_blocks: int. Transformer blocks.
        num_heads: int.
        ffn_dim: int. Feed-forward width (0 = embedding_dim).
        dropout: float.
        attention_dropout: float.
        norm_first: bool. Pre-LN (True) or post-LN (False).
        positional: str. ``learned`` (recency embeddings) or ``none``.
        num_ratings: int. 0: the tower reads items only. N > 0: each event's explicit
            feedback (rating id 1..N, 0 = unknown) adds a learned embedding to its item's
            (a rating-aware history; an unknown rating adds nothing).

    Inputs (a dict):
        embeddings: float [b, L, embedding_dim]. Item-tower embeddings of the history
            (right-padded).
        padding_mask: bool [b, L]. True at real positions.
        ratings: int64 [b, L] (only with ``num_ratings`` > 0). Rating ids of the events.

    Outputs (a dict):
        sequence: float [b, L, embedding_dim] (zeros at padding).
        attention: float [b, num_heads, L, L]. The last block's attention probabilities
            (zeros without blocks).

    Example:
        >>> tower = UserTower(embedding_dim=64, max_len=200)
        >>> out = tower({"embeddings": e, "padding_mask": mask})
        >>> UserTower.from_config(tower.get_config())  # same architecture
    """

    def __init__(self, embedding_dim: int, max_len: int, num_blocks: int = 2, num_heads: int = 1,
                 ffn_dim: int = 0, dropout: float = 0.2, attention_dropout: float = 0.2,
                 norm_first: bool = True, positional: str = "learned", num_ratings: int = 0, **kwargs):
        if positional not in POSITIONAL_TYPES:
            raise ValueError(f"positional must be one of {', '.join(POSITIONAL_TYPES)}, got {positional!r}")
        # === Layers ===
        positions = PositionalEmbedding(max_len, embedding_dim, name="positions") \
            if positional == "learned" else None
        if num_ratings < 0:
            raise ValueError(f"num_ratings must be >= 0, got {num_ratings}")
        feedback = tf.keras.layers.Embedding(num_ratings + 1, embedding_dim, name="feedback") \
            if num_ratings else None
        input_dropout = tf.keras.layers.Dropout(dropout, name="input_dropout")
        blocks = [
            TransformerBlock(embedding_dim, num_heads, ffn_dim or embedding_dim, dropout,
                             attention_dropout, norm_first, causal=True, name=f"block_{i}")
            for i in range(num_blocks)
        ]
        final_norm = tf.keras.layers.LayerNormalization(epsilon=1e-6, name="final_norm") \
            if norm_first else None

        # === Functional model ===
        embeddings = tf.keras.Input(shape=(None, embedding_dim), name="embeddings")
        padding_mask = tf.keras.Input(shape=(None,), dtype=tf.bool, name="padding_mask")
        inputs = {"embeddings": embeddings, "padding_mask": padding_mask}
        x = embeddings
        if feedback is not None:
            ratings = inputs["ratings"] = tf.keras.Input(shape=(None,), dtype=tf.int64, name="ratings")
            ratings = tf.clip_by_value(ratings, 0, num_ratings)
            x = x + tf.cast(feedback(ratings), x.dtype) * tf.cast(ratings > 0, x.dtype)[..., tf.newaxis]
        x = x * tf.cast(padding_mask, x.dtype)[..., tf.newaxis]
        if positions is not None:
            x = x + tf.cast(positions(padding_mask), x.dtype)
        x = input_dropout(x)
        attention = tf.zeros_like(tf.cast(attention_mask(padding_mask), tf.float32))[:, tf.newaxis]
        for block in blocks:
            x, attention = block(x, padding_mask, return_attention=True)
        if final_norm is not None:
            x = final_norm(x) * tf.cast(padding_mask, x.dtype)[..., tf.newaxis]
        super().__init__(inputs=inputs, outputs={"sequence": x, "attention": attention}, **kwargs)

        # === Config ===
        self.embedding_dim = embedding_dim
        self.max_len = max_len
        self.num_blocks = num_blocks
        self.num_heads = num_heads
        self.ffn_dim = ffn_dim
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.norm_first = norm_first
        self.positional = positional
        self.num_ratings = num_ratings

    def get_config(self):
        return {
            "name": self.name, "trainable": self.trainable,
            "embedding_dim": self.embedding_dim, "max_len": self.max_len,
            "num_blocks": self.num_blocks, "num_heads": self.num_heads, "ffn_dim": self.ffn_dim,
            "dropout": self.dropout, "attention_dropout": self.attention_dropout,
            "norm_first": self.norm_first, "positional": self.positional,
            "num_ratings": self.num_ratings,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def last_position(sequence_output: tf.Tensor, padding_mask: tf.Tensor) -> tf.Tensor:
    """The output at each row's last real position ([b, L, d] -> [b, d]); zeros if empty."""
    lengths = tf.reduce_sum(tf.cast(padding_mask, tf.int32), axis=1)
    index = tf.maximum(lengths - 1, 0)
    out = tf.gather(sequence_output, index, batch_dims=1)
    return out * tf.cast(lengths > 0, out.dtype)[:, tf.newaxis]
