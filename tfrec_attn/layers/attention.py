"""Causal self-attention blocks and recency positional embeddings."""

from __future__ import annotations

import tensorflow as tf

from tfrec_attn.features.serializable import register

POSITIONAL_TYPES = ("learned", "none")  # recency embeddings, or none


def attention_mask(padding_mask: tf.Tensor, causal: bool = True) -> tf.Tensor:
    """``[b, L, L]`` boolean mask: query ``t`` may attend to valid keys ``s`` (``s <= t`` if causal).

    Args:
        padding_mask: bool [b, L]. True at real (non-padding) positions.
    """
    keys = padding_mask[:, tf.newaxis, :]
    if not causal:
        return tf.logical_and(keys, tf.ones_like(padding_mask)[:, :, tf.newaxis])
    length = tf.shape(padding_mask)[1]
    lower = tf.cast(tf.linalg.band_part(tf.ones((length, length)), -1, 0), tf.bool)
    return tf.logical_and(keys, lower[tf.newaxis])


@register
class PositionalEmbedding(tf.keras.layers.Layer):
    """Learned embeddings of *recency*: position 0 is the most recent valid item.

    Counting from the end makes the embedding of "the last item" the same whatever the
    history length or padding, which is what next-item prediction cares about.

    Args:
        max_len: int. Number of positions.
        embedding_dim: int.

    Call arguments:
        padding_mask: bool [b, L], True at real positions (right-padded sequences).

    Returns:
        float [b, L, embedding_dim]; zeros at padding.
    """

    def __init__(self, max_len: int, embedding_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.max_len = max_len
        self.embedding_dim = embedding_dim
        self.embedding = tf.keras.layers.Embedding(max_len, embedding_dim, name="recency")

    def call(self, padding_mask):
        valid = tf.cast(padding_mask, tf.int32)
        lengths = tf.reduce_sum(valid, axis=1, keepdims=True)
        positions = tf.range(tf.shape(padding_mask)[1])[tf.newaxis, :]
        recency = tf.clip_by_value(lengths - 1 - positions, 0, self.max_len - 1)
        out = self.embedding(recency)
        return out * tf.cast(padding_mask, out.dtype)[..., tf.newaxis]

    def get_config(self):
        return {**super().get_config(), "max_len": self.max_len, "embedding_dim": self.embedding_dim}


@register
class TransformerBlock(tf.keras.layers.Layer):
    """Transformer encoder block on ``tf.keras.layers.MultiHeadAttention``.

    Args:
        embedding_dim: int. Model width.
        num_heads: int. Must divide ``embedding_dim``.
        ffn_dim: int. Hidden width of the feed-forward network.
        dropout: float. Dropout on residual branches.
        attention_dropout: float. Dropout on attention probabilities.
        norm_first: bool. Pre-LN (True) or post-LN (False).
        causal: bool. Position ``t`` attends only to positions ``<= t``.

    Call arguments:
        inputs: float [b, L, embedding_dim].
        padding_mask: bool [b, L]. True at real positions.
        return_attention: bool. Also return the attention probabilities [b, heads, L, L].
    """

    def __init__(self, embedding_dim: int, num_heads: int = 1, ffn_dim: int | None = None,
                 dropout: float = 0.0, attention_dropout: float = 0.0, norm_first: bool = True,
                 causal: bool = True, **kwargs):
        super().__init__(**kwargs)
        if embedding_dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide embedding_dim={embedding_dim}")
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.ffn_dim = ffn_dim or embedding_dim
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.norm_first = norm_first
        self.causal = causal
        self.attention = tf.keras.layers.MultiHeadAttention(
            num_heads, embedding_dim // num_heads, dropout=attention_dropout, name="attention")
        self.ffn_in = tf.keras.layers.Dense(self.ffn_dim, activation="gelu", name="ffn_in")
        self.ffn_out = tf.keras.layers.Dense(embedding_dim, name="ffn_out")
        self.norm_attention = tf.keras.layers.LayerNormalization(epsilon=1e-6, name="norm_attention")
        self.norm_ffn = tf.keras.layers.LayerNormalization(epsilon=1e-6, name="norm_ffn")
        self.drop_attention = tf.keras.layers.Dropout(dropout)
        self.drop_ffn = tf.keras.layers.Dropout(dropout)
        self.drop_hidden = tf.keras.layers.Dropout(dropout)

    def _ffn(self, x, training):
        return self.ffn_out(self.drop_hidden(self.ffn_in(x), training=training))

    def call(self, inputs, padding_mask, training=False, return_attention=False):
        mask = attention_mask(padding_mask, self.causal)
        x = inputs
        if self.norm_first:
            h = self.norm_attention(x)
            h, scores = self.attention(h, h, attention_mask=mask, training=training,
                                       return_attention_scores=True)
            x = x + self.drop_attention(h, training=training)
            x = x + self.drop_ffn(self._ffn(self.norm_ffn(x), training), training=training)
        else:
            h, scores = self.attention(x, x, attention_mask=mask, training=training,
                                       return_attention_scores=True)
            x = self.norm_attention(x + self.drop_attention(h, training=training))
            x = self.norm_ffn(x + self.drop_ffn(self._ffn(x, training), training=training))
        x = x * tf.cast(padding_mask, x.dtype)[..., tf.newaxis]
        return (x, scores) if return_attention else x

    def get_config(self):
        return {
            **super().get_config(),
            "embedding_dim": self.embedding_dim, "num_heads": self.num_heads, "ffn_dim": self.ffn_dim,
            "dropout": self.dropout, "attention_dropout": self.attention_dropout,
            "norm_first": self.norm_first, "causal": self.causal,
        }
