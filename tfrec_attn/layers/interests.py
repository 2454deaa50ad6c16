"""Several interests per user from the user tower's outputs: self-attentive extraction
(ComiRec-SA, KDD 2020) or dynamic routing of capsules (MIND, CIKM 2019; ComiRec-DR).

Both extractors share one call: ``(sequence, padding_mask, causal)`` -> ``(interests,
attention)``, the attention being each interest's distribution over the history positions.
:func:`aggregate_interests` merges the interests' scores of the same items into one."""

from __future__ import annotations

import tensorflow as tf

from tfrec_attn.features.serializable import register
from tfrec_attn.layers.attention import attention_mask
from tfrec_attn.layers.user_tower import last_position

_NEG = -1e9
EXTRACTION_TYPES = ("self_attentive", "capsule")  # InterestExtractor, CapsuleExtractor
AGGREGATION_TYPES = ("max", "proportional")  # aggregate_interests


def aggregate_interests(scores: tf.Tensor, weights: tf.Tensor, aggregation: str = "max"):
    """Merges K interests' scores of the same items into one score per item.

    Args:
        scores: float [b, K, n]. Each interest's scores; -inf = excluded (the history), in
            every interest alike.
        weights: float [b, K]. The interests' weights (their share of the history); a row
            whose weights are all 0 (an empty history) weighs them equally.
        aggregation: ``max``: an item's best interest score. ``proportional``: ``w_k / j``
            for the item at rank ``j`` (1-based, among the items not excluded) of interest
            ``k``, the max over ``k``: ranking by it deals the list's slots to the interests in
            proportion to ``w`` (D'Hondt), each taking its best items not yet listed.

    Returns:
        (float [b, n] merged scores, -inf where excluded; int32 [b, n] the interest that
        gives each item its score).
    """
    scores = tf.cast(scores, tf.float32)
    if aggregation == "max":
        return tf.reduce_max(scores, axis=1), tf.argmax(scores, axis=1, output_type=tf.int32)
    if aggregation != "proportional":
        raise ValueError(f"aggregation must be one of {', '.join(AGGREGATION_TYPES)}, got {aggregation!r}")
    weights = tf.cast(weights, tf.float32)
    k = tf.cast(tf.shape(weights)[1], tf.float32)
    weights = tf.where(tf.reduce_sum(weights, axis=1, keepdims=True) > 0, weights, 1.0 / k)
    ranks = tf.argsort(tf.argsort(scores, axis=-1, direction="DESCENDING", stable=True), axis=-1, stable=True)
    quotients = weights[..., tf.newaxis] / tf.cast(ranks + 1, tf.float32)  # [b, K, n]
    excluded = tf.math.is_inf(scores) & (scores < 0)
    quotients = tf.where(excluded, float("-inf"), quotients)
    merged = tf.reduce_max(quotients, axis=1)
    # ties (equal quotients of two interests): the interest that scores the item higher
    source = tf.argmax(tf.where(quotients >= merged[:, tf.newaxis], scores, float("-inf")), axis=1,
                       output_type=tf.int32)
    return merged, source


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


def squash(vectors, axis: int = -1):
    """Capsule squashing: ``|s|^2 / (1 + |s|^2) * s / |s|`` (0 stays 0)."""
    norm2 = tf.reduce_sum(tf.square(vectors), axis=axis, keepdims=True)
    return vectors * norm2 / (1.0 + norm2) / tf.sqrt(norm2 + 1e-9)


@register
class CapsuleExtractor(tf.keras.layers.Layer):
    """K interest capsules by dynamic routing over the history (ComiRec-DR; MIND's B2I routing).

    Each history output ``h_j`` is mapped per capsule, ``u_kj = W_k h_j``; routing logits
    ``b_kj`` start at 0 and, for ``iterations`` rounds, ``c_kj = softmax_k(b_kj)`` (each item
    shares itself among the capsules), ``v_k = squash(sum_j c_kj u_kj)`` and ``b_kj += v_k .
    u_kj`` (the routing rounds do not back-propagate into ``u``, as in ComiRec-DR). The last
    round's ``v_k`` are the interests. Per-capsule maps break the symmetry, so the start needs
    no random logits and the layer is deterministic.

    ``attention[k, j]`` = ``c_kj`` normalised over ``j``: which history items interest ``k``
    is made of (0 on padding and, ``causal=True``, after the query position). ``residual``
    adds the query position's own output, as :class:`InterestExtractor`.

    Args:
        num_interests: int. K.
        iterations: int. Routing rounds (ComiRec-DR and MIND use 3).
        residual: bool. Add the query position's output to every interest.

    Call arguments: as :class:`InterestExtractor`.

    Example:
        >>> extractor = CapsuleExtractor(num_interests=4, iterations=3)
        >>> interests, attention = extractor(sequence, mask)  # [b, 4, d], [b, 4, L]
    """

    def __init__(self, num_interests: int, iterations: int = 3, residual: bool = False, **kwargs):
        super().__init__(**kwargs)
        if num_interests < 1 or iterations < 1:
            raise ValueError(f"num_interests and iterations must be >= 1, got {num_interests}, {iterations}")
        self.num_interests = num_interests
        self.iterations = iterations
        self.residual = residual

    def build(self, input_shape):
        dim = int(input_shape[-1])
        self.maps = self.add_weight(name="maps", shape=(self.num_interests, dim, dim),
                                    initializer=tf.keras.initializers.RandomNormal(stddev=dim ** -0.5))
        super().build(input_shape)

    def call(self, sequence, padding_mask, causal: bool = False):
        h = tf.cast(sequence, tf.float32)
        u = tf.einsum("kde,bje->bkjd", tf.cast(self.maps, tf.float32), h)  # [b, K, L, d]
        if causal:
            allowed = attention_mask(padding_mask, causal=True)[:, :, tf.newaxis, :]  # [b, t, 1, j]
        else:
            allowed = padding_mask[:, tf.newaxis, tf.newaxis, :]  # [b, 1, 1, j]
        allowed = tf.cast(allowed, tf.float32)
        shape = tf.shape(allowed)
        logits = tf.zeros(tf.stack([shape[0], shape[1], self.num_interests, tf.shape(h)[1]]))  # [b, t, K, j]
        fixed = tf.stop_gradient(u)
        for round_ in range(self.iterations):
            last = round_ == self.iterations - 1
            share = tf.nn.softmax(logits, axis=2) * allowed  # each item over the capsules
            interests = squash(tf.einsum("btkj,bkjd->btkd", share, u if last else fixed))
            if not last:
                logits = logits + tf.einsum("btkd,bkjd->btkj", interests, fixed)
        attention = share / tf.maximum(tf.reduce_sum(share, axis=-1, keepdims=True), 1e-9)
        if not causal:
            interests, attention = interests[:, 0], attention[:, 0]  # [b, K, d], [b, K, L]
        interests = tf.cast(interests, sequence.dtype)
        if self.residual:
            own = sequence if causal else last_position(sequence, padding_mask)
            interests = interests + own[..., tf.newaxis, :]
        return interests, tf.cast(attention, sequence.dtype)

    def get_config(self):
        return {**super().get_config(), "num_interests": self.num_interests, "iterations": self.iterations,
                "residual": self.residual}
