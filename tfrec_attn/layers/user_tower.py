"""The user tower: a causal transformer over the user's history."""

from __future__ import annotations

import tensorflow as tf

from tfrec_attn.layers.attention import PositionalEmbedding, TransformerBlock, register


@register
class UserTower(tf.keras.layers.Layer):
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

    Call arguments:
        embeddings: float [b, L, d]. Item-tower embeddings of the history (right-padded).
        padding_mask: bool [b, L].

    Returns:
        float [b, L, d] (zeros at padding).
    """

    def __init__(self, embedding_dim: int, max_len: int, num_blocks: int = 2, num_heads: int = 1,
                 ffn_dim: int = 0, dropout: float = 0.2, attention_dropout: float = 0.2,
                 norm_first: bool = True, positional: str = "learned", **kwargs):
        super().__init__(**kwargs)
        if positional not in ("learned", "none"):
            raise ValueError(f"positional must be 'learned' or 'none', got {positional!r}")
        self.embedding_dim = embedding_dim
        self.max_len = max_len
        self.num_blocks = num_blocks
        self.num_heads = num_heads
        self.ffn_dim = ffn_dim
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.norm_first = norm_first
        self.positional = positional
        self.positions = PositionalEmbedding(max_len, embedding_dim, name="positions") \
            if positional == "learned" else None
        self.input_dropout = tf.keras.layers.Dropout(dropout)
        self.blocks = [
            TransformerBlock(embedding_dim, num_heads, ffn_dim or embedding_dim, dropout,
                             attention_dropout, norm_first, causal=True, name=f"block_{i}")
            for i in range(num_blocks)
        ]
        self.final_norm = tf.keras.layers.LayerNormalization(epsilon=1e-6, name="final_norm") \
            if norm_first else None

    def call(self, embeddings, padding_mask, training=False, return_attention=False):
        x = embeddings * tf.cast(padding_mask, embeddings.dtype)[..., tf.newaxis]
        if self.positions is not None:
            x = x + tf.cast(self.positions(padding_mask), x.dtype)
        x = self.input_dropout(x, training=training)
        attention = []
        for block in self.blocks:
            x, scores = block(x, padding_mask, training=training, return_attention=True)
            attention.append(scores)
        if self.final_norm is not None:
            x = self.final_norm(x) * tf.cast(padding_mask, x.dtype)[..., tf.newaxis]
        return (x, attention) if return_attention else x

    def get_config(self):
        return {
            **super().get_config(),
            "embedding_dim": self.embedding_dim, "max_len": self.max_len,
            "num_blocks": self.num_blocks, "num_heads": self.num_heads, "ffn_dim": self.ffn_dim,
            "dropout": self.dropout, "attention_dropout": self.attention_dropout,
            "norm_first": self.norm_first, "positional": self.positional,
        }


def last_position(sequence_output: tf.Tensor, padding_mask: tf.Tensor) -> tf.Tensor:
    """The output at each row's last real position ([b, L, d] -> [b, d]); zeros if empty."""
    lengths = tf.reduce_sum(tf.cast(padding_mask, tf.int32), axis=1)
    index = tf.maximum(lengths - 1, 0)
    out = tf.gather(sequence_output, index, batch_dims=1)
    return out * tf.cast(lengths > 0, out.dtype)[:, tf.newaxis]
