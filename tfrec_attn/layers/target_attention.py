"""Target attention: each candidate attends over the user's history (DIN, BST).

Both layers take the history's event embeddings ``[b, H, d]`` with their padding mask and
the candidates' embeddings ``[b, C, d]``, and return, for every (user, candidate) pair, the
history pooled by that candidate's attention ``[b, C, d]`` and the attention weights
``[b, C, H]`` (exactly 0 at padding). The weights are what explanations show.

* :class:`DinAttention` (Zhou et al., KDD 2018): an activation unit, an MLP over
  ``[h, c, h - c, h * c]``, gives each history item a weight for the candidate; the
  pooled interest is ``sum_j w_j h_j``. As in the paper the weights are not
  softmax-normalised (``normalization="none"``: the sum keeps the *intensity* of the
  user's interest); ``normalization="softmax"`` normalises them over the real items.
* :class:`BstAttention` (Chen et al., BST, 2019): a transformer over the history followed
  by the candidate; the candidate's position reads the history through multi-head
  attention (mean of heads = the weights) and the output at that position is the pooled
  interest.
"""

from __future__ import annotations

import tensorflow as tf

from tfrec_attn.features.serializable import register

TARGET_ATTENTION_TYPES = ("din", "bst")
DIN_NORMALIZATIONS = ("none", "softmax")


def _mask_weights(weights: tf.Tensor, padding_mask: tf.Tensor) -> tf.Tensor:
    """Zeroes the weights of padding ([b, C, H] x [b, H])."""
    return weights * tf.cast(padding_mask, weights.dtype)[:, tf.newaxis, :]


@register
class DinAttention(tf.keras.layers.Layer):
    """DIN's local activation unit.

    Args:
        units: list of int. Hidden widths of the activation MLP (the last layer is a
            linear unit giving the weight).
        normalization: str. ``none`` (DIN) or ``softmax`` over the real history items.
        activation: str. Hidden activation.

    Call arguments:
        history: float [b, H, d]. Event embeddings (right-padded).
        padding_mask: bool [b, H]. True at real events.
        candidates: float [b, C, d].

    Returns:
        (pooled float [b, C, d], weights float [b, C, H]).
    """

    def __init__(self, units=(64, 32), normalization: str = "none", activation: str = "relu", **kwargs):
        super().__init__(**kwargs)
        if normalization not in DIN_NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {', '.join(DIN_NORMALIZATIONS)}, got {normalization!r}")
        self.units = [int(u) for u in units]
        self.normalization = normalization
        self.activation = activation
        self.hidden = [tf.keras.layers.Dense(u, activation=activation, name=f"hidden_{i}")
                       for i, u in enumerate(self.units)]
        self.score = tf.keras.layers.Dense(1, name="score")

    def build(self, input_shape):
        width = int(input_shape[-1]) if input_shape is not None and input_shape[-1] is not None else None
        if width is not None and self.hidden and not self.hidden[0].built:
            with tf.name_scope(self.hidden[0].name):  # weights named hidden_0/... as if called
                self.hidden[0].build(tf.TensorShape([None, 4 * width]))
        super().build(input_shape)

    @property
    def per_event_weights(self) -> bool:
        """True when each event's weight depends only on that event and the candidate (no
        normalization over the history), so removing an event leaves the others' weights
        as they were."""
        return self.normalization == "none"

    def _first_layer(self, history, candidates):
        """The first hidden layer on ``[h, c, h - c, h * c]`` without building that [b, C, H, 4d]
        tensor: with its kernel split as ``[W_h; W_c; W_d; W_p]`` it is
        ``h (W_h + W_d) + c (W_c - W_d) + (h * c) W_p``, the first two terms computed once per
        history item and once per candidate (4x fewer multiplications per pair)."""
        layer = self.hidden[0]
        if not layer.built:
            with tf.name_scope(layer.name):
                layer.build(tf.TensorShape([None, 4 * history.shape[-1]]))
        w_h, w_c, w_d, w_p = tf.split(tf.cast(layer.kernel, history.dtype), 4, axis=0)
        per_item = tf.einsum("bhd,du->bhu", history, w_h + w_d)[:, tf.newaxis]  # [b, 1, H, u]
        per_candidate = tf.einsum("bcd,du->bcu", candidates, w_c - w_d)[:, :, tf.newaxis]  # [b, C, 1, u]
        pairs = tf.einsum("bchd,du->bchu", candidates[:, :, tf.newaxis] * history[:, tf.newaxis], w_p)
        x = per_item + per_candidate + pairs
        if layer.use_bias:
            x = x + tf.cast(layer.bias, x.dtype)
        return layer.activation(x)

    def call(self, history, padding_mask, candidates, training=False):
        if self.hidden:
            x = self._first_layer(history, candidates)
            for layer in self.hidden[1:]:
                x = layer(x)
        else:  # no hidden layer: the score reads the pair features directly
            h = history[:, tf.newaxis, :, :]
            c = candidates[:, :, tf.newaxis, :]
            shape = tf.shape(h * c)
            h, c = tf.broadcast_to(h, shape), tf.broadcast_to(c, shape)
            x = tf.concat([h, c, h - c, h * c], axis=-1)
        logits = tf.squeeze(self.score(x), -1)  # [b, C, H]
        mask = padding_mask[:, tf.newaxis, :]
        if self.normalization == "softmax":
            logits = tf.where(mask, logits, tf.cast(-1e9, logits.dtype))
            weights = tf.nn.softmax(logits, axis=-1)
        else:
            weights = logits
        weights = _mask_weights(weights, padding_mask)
        pooled = tf.einsum("bch,bhd->bcd", weights, history)
        return pooled, weights

    def get_config(self):
        return {**super().get_config(), "units": self.units, "normalization": self.normalization,
                "activation": self.activation}


@register
class BstAttention(tf.keras.layers.Layer):
    """BST: transformer blocks over ``[history; candidate]`` for each candidate.

    Args:
        embedding_dim: int.
        num_heads: int.
        num_blocks: int. At least 1 (the last block's attention gives the weights).
        dropout: float.

    Call arguments and returns: as :class:`DinAttention` (weights: the last block's
    attention of the candidate position over the history, mean over heads; they sum to 1
    minus the candidate's attention to itself).
    """

    per_event_weights = False  # the events attend to each other: removing one moves every weight

    def __init__(self, embedding_dim: int, num_heads: int = 2, num_blocks: int = 1, dropout: float = 0.1,
                 **kwargs):
        super().__init__(**kwargs)
        from tfrec_attn.layers.attention import TransformerBlock

        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.num_blocks = num_blocks
        self.dropout = dropout
        self.blocks = [TransformerBlock(embedding_dim, num_heads, 2 * embedding_dim, dropout, dropout,
                                        norm_first=True, causal=False, name=f"block_{i}")
                       for i in range(num_blocks)]
        self.norm = tf.keras.layers.LayerNormalization(epsilon=1e-6, name="norm")

    def call(self, history, padding_mask, candidates, training=False):
        b, length, d = tf.shape(history)[0], tf.shape(history)[1], tf.shape(history)[2]
        c = tf.shape(candidates)[1]
        # One sequence per (user, candidate): [b * C, H + 1, d], the candidate last.
        hist = tf.reshape(tf.repeat(history[:, tf.newaxis], c, axis=1), [b * c, length, d])
        cand = tf.reshape(candidates, [b * c, 1, d])
        x = tf.concat([hist, cand], axis=1)
        mask = tf.reshape(tf.repeat(padding_mask[:, tf.newaxis], c, axis=1), [b * c, length])
        mask = tf.concat([mask, tf.ones([b * c, 1], tf.bool)], axis=1)
        scores = None
        for block in self.blocks:
            x, scores = block(x, mask, training=training, return_attention=True)
        pooled = tf.reshape(self.norm(x[:, -1]), [b, c, d])
        # Candidate position's attention over the history positions, mean over heads.
        weights = tf.reduce_mean(tf.cast(scores[:, :, -1, :-1], history.dtype), axis=1)
        weights = _mask_weights(tf.reshape(weights, [b, c, length]), padding_mask)
        return pooled, weights

    def get_config(self):
        return {**super().get_config(), "embedding_dim": self.embedding_dim, "num_heads": self.num_heads,
                "num_blocks": self.num_blocks, "dropout": self.dropout}
