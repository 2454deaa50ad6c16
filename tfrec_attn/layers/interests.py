"""Several interests per user: self-attentive extraction over the user tower's outputs
(ComiRec-SA, KDD 2020)."""

from __future__ import annotations

import tensorflow as tf

from tfrec_attn.features.serializable import register
from tfrec_attn.layers.attention import attention_mask
from tfrec_attn.layers.user_tower import last_position

_NEG = -1e9


@register
class InterestExtractor(tf.keras.layers.Layer):
    """K attention distributions over history positions -> K interest vectors.

    ``logits[k, j] = w2_k . tanh(W1 h_j)``; interest ``k`` = ``sum_j softmax_j(logits[k]) h_j``
    over the real positions ``j`` (and ``j <= t`` for the interests after position ``t``,
    ``causal=True``: what training predicts the next item from at every position).

    With ``residual``, every interest also carries the query position's own output ``h_t`` (the
    single-vector tower's query): ``interest_k = h_t + sum_j a_kj h_j``, so an item's score is
    the one-vector score plus its best interest's.

    Args:
        num_interests: int. K.
        hidden_dim: int. Width of ``W1`` (ComiRec uses 4 x the embedding width).
        residual: bool. Add the query position's output to every interest.

    Call arguments:
        sequence: float [b, L, d]. The user tower's outputs.
        padding_mask: bool [b, L]. True at real positions.
        causal: bool. False: the interests of the whole history, [b, K, d] and attention
            [b, K, L]. True: the interests after every position, [b, L, K, d] and attention
            [b, L, K, L].

    Padding never receives attention (weights are exactly 0 there); an empty history gives
    zero interests.

    Example:
        >>> extractor = InterestExtractor(num_interests=4, hidden_dim=256)
        >>> interests, attention = extractor(sequence, mask)  # [b, 4, d], [b, 4, L]
    """

    def __init__(self, num_interests: int, hidden_dim: int, residual: bool = False, **kwargs):
        super().__init__(**kwargs)
        if num_interests < 1:
            raise ValueError(f"num_interests must be >= 1, got {num_interests}")
        self.num_interests = num_interests
        self.hidden_dim = hidden_dim
        self.residual = residual
        self.hidden = tf.keras.layers.Dense(hidden_dim, activation="tanh", use_bias=False, name="hidden")
        self.heads = tf.keras.layers.Dense(num_interests, use_bias=False, name="heads")

    def build(self, input_shape):
        dim = input_shape[-1]
        self.hidden.build((None, None, dim))
        self.heads.build((None, None, self.hidden_dim))
        super().build(input_shape)

    def call(self, sequence, padding_mask, causal: bool = False):
        logits = tf.cast(self.heads(self.hidden(sequence)), tf.float32)  # [b, L, K]
        logits = tf.transpose(logits, [0, 2, 1])  # [b, K, L]
        if causal:
            allowed = attention_mask(padding_mask, causal=True)[:, :, tf.newaxis, :]  # [b, t, 1, j]
            logits = logits[:, tf.newaxis]  # [b, 1, K, j]
        else:
            allowed = padding_mask[:, tf.newaxis, :]  # [b, 1, j]
        attention = tf.nn.softmax(tf.where(allowed, logits, _NEG), axis=-1) * tf.cast(allowed, tf.float32)
        attention = tf.cast(attention, sequence.dtype)
        equation = "btkj,bjd->btkd" if causal else "bkj,bjd->bkd"
        interests = tf.einsum(equation, attention, sequence)
        if self.residual:
            own = sequence if causal else last_position(sequence, padding_mask)  # [b, (L,) d]
            interests = interests + own[..., tf.newaxis, :]
        return interests, attention

    def get_config(self):
        return {**super().get_config(), "num_interests": self.num_interests, "hidden_dim": self.hidden_dim,
                "residual": self.residual}
