"""Two-tower retrieval with a causal-transformer user tower (SASRec-style, TFRS-built).

User tower (:class:`~tfrec_attn.layers.UserTower`, a functional Keras model): history
item embeddings (from the item tower, weights shared) + recency positions -> causal
transformer -> one embedding per position. Item tower: any layer with the
:mod:`tfrec_attn.layers.item_tower` interface. Score = dot product. Training predicts the
next item at every position with the configured softmax task (:mod:`tfrec_attn.tasks`).
"""

from __future__ import annotations

import functools

import tensorflow as tf

from tfrec_attn.features.ranking import event_rating_ids
from tfrec_attn.features.serializable import register
from tfrec_attn.features.vocab import FIRST_ITEM_INDEX
from tfrec_attn.layers.user_tower import last_position
from tfrec_attn.models.base import RecommenderModel
from tfrec_attn.tasks.next_item import Candidates


def _compact(values: tf.Tensor, keep: tf.Tensor, max_len: int) -> tf.Tensor:
    """The newest ``max_len`` ``values`` [b, H] where ``keep``, left-aligned, right-padded
    with 0: [b, L] with L = min(max(kept per row), max_len), at least one column."""
    dense = tf.ragged.boolean_mask(values, keep)[:, -max_len:].to_tensor(0)
    width = tf.maximum(tf.shape(dense)[1], 1)
    return tf.pad(dense, [[0, 0], [0, width - tf.shape(dense)[1]]])


def compact_history(ids: tf.Tensor, max_len: int) -> tf.Tensor:
    """Drops padding/OOV anywhere in each row, keeps the newest ``max_len``, right-pads with 0.

    Args:
        ids: int [b, H]. Model indices, oldest first.

    Returns:
        int [b, min(max(row lengths), max_len)] (at least one column).
    """
    return _compact(ids, ids >= FIRST_ITEM_INDEX, max_len)


def compact_ratings(ids: tf.Tensor, ratings: tf.Tensor, max_len: int) -> tf.Tensor:
    """The events' ``ratings`` [b, H] (aligned with ``ids``) at the positions
    :func:`compact_history` keeps of ``ids``: [b, L] of the same width, 0 at padding."""
    return _compact(ratings, ids >= FIRST_ITEM_INDEX, max_len)


def _deserialize(value):
    return tf.keras.utils.deserialize_keras_object(value) if isinstance(value, dict) else value


@register
class SequentialRetrievalModel(RecommenderModel):
    """Transformer two-tower retrieval model.

    Args:
        item_tower: item tower layer (or its serialized config), e.g. ``IdItemTower``.
        user_tower: ``UserTower`` (or its serialized config).
        task: a next-item task of :mod:`tfrec_attn.tasks` (or its serialized config).
        scale_embeddings: bool. Multiply history item embeddings by sqrt(d) before the
            user tower.
        item_bias: bool. score = user . item + b_item (a learned popularity prior).
        future_weight: float. Weight of targets beyond the next one (labels [b, L, w]).
        static_shapes: bool. Keep padding positions in the loss with weight 0 instead of
            dropping them, so every tensor shape depends only on the batch shape (XLA).

    ``get_config`` returns exactly these arguments (towers and task serialized), so a
    trained model is rebuilt from its config and weights alone
    (:func:`tfrec_attn.models.load_model`).

    Example:
        >>> model = build_retrieval_model(config.model, config.loss, vocab.num_indices)
        >>> model.compile(tf.keras.optimizers.Adam(1e-3)); model.fit(dataset)
        >>> scores = model.score_items(history_indices)  # [b, num_indices - 2]
    """

    def __init__(self, item_tower, user_tower, task, scale_embeddings: bool = False,
                 item_bias: bool = False, future_weight: float = 1.0, static_shapes: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        self.item_tower = _deserialize(item_tower)
        self.user_tower = _deserialize(user_tower)
        self.task = _deserialize(task)
        self.scale_embeddings = scale_embeddings
        self.future_weight = future_weight
        self.static_shapes = static_shapes
        self.num_indices = self.item_tower.num_indices
        self.max_len = self.user_tower.max_len
        self.num_ratings = getattr(self.user_tower, "num_ratings", 0)  # > 0: a rating-aware history
        self.input_scale = float(self.user_tower.embedding_dim) ** 0.5 if scale_embeddings else 1.0
        self.item_bias = tf.keras.layers.Embedding(
            self.num_indices, 1, embeddings_initializer="zeros", name="item_bias") if item_bias else None
        if self.item_bias is not None:
            self.item_bias.build((None,))  # its weight must exist before the optimizer is built
        # A fine-tuned text encoder trains with its own optimizer and learning rate.
        encoder = getattr(self.item_tower, "encoder_model", None)
        self.encoder_optimizer = tf.keras.optimizers.Adam(self.item_tower.encoder_learning_rate) \
            if encoder is not None else None

    def optimizer_groups(self):
        if self.encoder_optimizer is None:
            return super().optimizer_groups()
        encoder = {id(v) for v in self.item_tower.encoder_model.trainable_variables}
        rest = [v for v in self.trainable_variables if id(v) not in encoder]
        return [(self.optimizer, rest), (self.encoder_optimizer, self.item_tower.encoder_model.trainable_variables)]

    def get_config(self):
        serialize = tf.keras.utils.serialize_keras_object
        return {
            "name": self.name,
            "item_tower": serialize(self.item_tower), "user_tower": serialize(self.user_tower),
            "task": serialize(self.task), "scale_embeddings": self.scale_embeddings,
            "item_bias": self.item_bias is not None, "future_weight": self.future_weight,
            "static_shapes": self.static_shapes,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def build_weights(self):
        """Creates every weight (a call on a dummy history); returns the model."""
        self(tf.zeros((1, 1), tf.int64))
        return self

    # -- towers -------------------------------------------------------------------------
    def rating_ids(self, history, ratings):
        """The rating ids [b, L] (1..num_ratings, 0 = unknown) a rating-aware user tower reads
        for a compact ``history`` [b, L], from the events' rating values ``ratings`` [b, L]
        (NaN, <= 0 or None: unknown). None when the tower reads no ratings."""
        if not self.num_ratings:
            return None
        if ratings is None:
            return tf.zeros_like(history, tf.int64)
        ids = event_rating_ids(ratings, self.num_ratings)
        return tf.where(history >= FIRST_ITEM_INDEX, ids, 0)

    def compact(self, history, ratings=None):
        """(:func:`compact_history` of any ``history`` [b, H], the rating ids of its events —
        ``ratings`` [b, H] their values, aligned with ``history`` — or None when the tower
        reads no ratings)."""
        compact = compact_history(history, self.max_len)
        if not self.num_ratings or ratings is None:
            return compact, self.rating_ids(compact, None)
        return compact, self.rating_ids(compact, compact_ratings(history, tf.cast(ratings, tf.float32), self.max_len))

    def encode(self, history, training=False, rating_ids=None):
        """User tower outputs (``sequence`` [b, L, d], ``attention``) of a compact,
        right-padded ``history`` [b, L] (and, for a rating-aware tower, its events' rating
        ids [b, L]; None = all unknown)."""
        mask = history >= FIRST_ITEM_INDEX
        embeddings = self.item_tower(history, training=training)
        if self.input_scale != 1.0:
            embeddings = embeddings * self.input_scale
        inputs = {"embeddings": embeddings, "padding_mask": mask}
        if self.num_ratings:
            inputs["ratings"] = rating_ids if rating_ids is not None else tf.zeros_like(history, tf.int64)
        return self.user_tower(inputs, training=training)

    def _query(self, user):
        """With an item bias, queries get a constant 1 so that query . candidate = u . e + b."""
        if self.item_bias is None:
            return user
        return tf.concat([user, tf.ones_like(user[..., :1])], axis=-1)

    def candidate_vectors(self, indices, training=False):
        """Candidate vectors of item indices: the item embedding (+ its bias as a last coordinate)."""
        vectors = self.item_tower.candidate_embeddings(indices, training=training)
        if self.item_bias is None:
            return vectors
        return tf.concat([vectors, tf.cast(self.item_bias(indices), vectors.dtype)], axis=-1)

    def text_item_vectors(self, indices, text_features):
        """Candidate vectors of items given by index and text-encoder features [n, text_dim]:
        an unknown item (index 1, OOV) gets its vector from its text alone (the id tower
        ignores the text: every unknown item is OOV)."""
        vectors = self.item_tower.embed_text_features(indices, text_features)
        if self.item_bias is None:
            return vectors
        return tf.concat([vectors, tf.cast(self.item_bias(indices), vectors.dtype)], axis=-1)

    def new_item_vectors(self, text_features):
        """Candidate vectors of items the model has never seen, from their text features."""
        return self.text_item_vectors(tf.ones(tf.shape(text_features)[:1], tf.int64), text_features)

    def _candidate_table(self, training=False):
        table = self.item_tower.all_embeddings(training=training)
        if self.item_bias is None:
            return table
        return tf.concat([table, tf.cast(self.item_bias.embeddings, table.dtype)], axis=-1)

    def call(self, history, training=False, ratings=None):
        """Query vector [b, d] (d + 1 with an item bias) from any history [b, H] of model
        indices (oldest first) — and, for a rating-aware tower, its events' ratings [b, H]
        (NaN or 0 = unknown; None = all unknown); score = query . candidate (see
        :meth:`item_embeddings`)."""
        history, rating_ids = self.compact(history, ratings)
        sequence = self.encode(history, training=training, rating_ids=rating_ids)["sequence"]
        return self._query(last_position(sequence, history >= FIRST_ITEM_INDEX))

    def position_queries(self, history, ratings=None):
        """Query vectors [b, L, d (+1)] after every position of a compact, right-padded
        ``history`` [b, L] (at most ``max_len`` items; ``ratings`` [b, L] its events' values):
        position t scores the item after ``history[:, :t + 1]`` (what training predicts
        there; hard-negative mining reads it)."""
        return self._query(self.encode(history, rating_ids=self.rating_ids(history, ratings))["sequence"])

    def explain_history(self, history, ratings=None):
        """Which history items the user embedding attends to.

        Args:
            history: int [b, H] model indices (any padding, OOV, length).
            ratings: float [b, H] or None. The events' ratings (a rating-aware tower).

        Returns:
            float [b, H]: the last block's attention (mean over heads) of the last position
            over each input position; 0 for padding, OOV and items beyond ``max_len``.
        """
        compact, rating_ids = self.compact(history, ratings)
        mask = compact >= FIRST_ITEM_INDEX
        attention = self.encode(compact, rating_ids=rating_ids)["attention"]
        weights = tf.reduce_mean(tf.cast(attention, tf.float32), axis=1)  # [b, L, L]
        last = tf.maximum(tf.reduce_sum(tf.cast(mask, tf.int32), axis=1) - 1, 0)
        weights = tf.gather(weights, last, batch_dims=1)  # [b, L] (query = last position)
        return self.to_input_positions(history, weights)

    def to_input_positions(self, history, weights):
        """Per-position values of the compact history (``weights`` [b, L] or [b, K, L], what
        :func:`compact_history` made of ``history``) at ``history``'s own positions ([b, H]
        or [b, K, H]); 0 for padding, OOV and items beyond ``max_len``."""
        valid = history >= FIRST_ITEM_INDEX
        before = tf.cumsum(tf.cast(valid, tf.int32), axis=1, exclusive=True)
        dropped = tf.maximum(tf.reduce_sum(tf.cast(valid, tf.int32), axis=1, keepdims=True) - self.max_len, 0)
        position = before - dropped
        keep = valid & (position >= 0)
        # Positions that keep nothing (padding after the last item) point at any real column.
        position = tf.clip_by_value(position, 0, tf.maximum(tf.shape(weights)[-1] - 1, 0))
        if weights.shape.rank == 3:  # [b, K, L]: the same map for every interest
            index = tf.broadcast_to(position[:, tf.newaxis],
                                    tf.concat([tf.shape(weights)[:2], tf.shape(position)[1:]], 0))
            picked = tf.gather(weights, index, batch_dims=2)
            return tf.where(keep[:, tf.newaxis], picked, 0.0)
        picked = tf.gather(weights, position, batch_dims=1)
        return tf.where(keep, picked, 0.0)

    def item_embeddings(self):
        """Candidate vectors of the catalogue items, [num_indices - 2, d (+1 with item bias)]."""
        return self._candidate_table()[FIRST_ITEM_INDEX:]

    @tf.function(reduce_retracing=True)
    def score_items(self, history, extra_vectors=None, ratings=None):
        """Dot-product scores [b, num_indices - 2] over the catalogue (then [b, n] over
        ``extra_vectors`` [n, d], candidates outside the vocabulary, when given); ``ratings``
        [b, H]: the history events' ratings (a rating-aware tower)."""
        user = tf.cast(self(history, ratings=ratings), tf.float32)
        table = tf.cast(self.item_embeddings(), tf.float32)
        if extra_vectors is not None:
            table = tf.concat([table, tf.cast(extra_vectors, tf.float32)], axis=0)
        return tf.matmul(user, table, transpose_b=True)

    # -- training -----------------------------------------------------------------------
    def training_queries(self, history, labels, training=False, rating_ids=None):
        """(queries [b, L, d (+1)] — or [b, L, K, d (+1)], K interests a candidate takes the
        max over — that predict ``labels`` after every position of a compact ``history``
        (``rating_ids``: its events' rating ids, a rating-aware tower), an extra loss term or
        None): the one hook a variant of the user side overrides
        (:class:`~tfrec_attn.models.multi_interest.MultiInterestRetrievalModel`)."""
        return self._query(self.encode(history, training=training, rating_ids=rating_ids)["sequence"]), None

    def compute_loss(self, inputs, training=False):
        features, labels = inputs
        history = features["history"]
        output, extra = self.training_queries(history, labels, training=training,
                                              rating_ids=self.rating_ids(history, features.get("history_ratings")))
        weights = None
        if labels.shape.rank == 3:  # [b, L, w]: the next w items of every position
            window = tf.shape(labels)[2]
            output = tf.repeat(tf.expand_dims(output, 2), window, axis=2)
            weights = tf.concat([tf.ones([1]), tf.fill([window - 1], float(self.future_weight))], 0)
            weights = tf.broadcast_to(weights, tf.shape(labels))
        valid = labels >= FIRST_ITEM_INDEX
        if weights is None:
            weights = tf.ones(tf.shape(labels))
        weights = weights * tf.cast(valid, tf.float32)
        step = self.optimizer.iterations if self.optimizer is not None else None
        # Candidates see the item tower in training mode too (a hybrid tower's id dropout on the
        # candidate side, when configured; the exact softmax reads the whole table every step).
        candidates = Candidates(embed=functools.partial(self.candidate_vectors, training=training),
                                table=functools.partial(self._candidate_table, training=training))
        query_shape = tf.shape(output)[labels.shape.rank:]  # [d], or [K, d] for several interests
        if self.static_shapes:
            loss = self.task(tf.reshape(output, tf.concat([[-1], query_shape], 0)), tf.reshape(labels, [-1]), candidates,
                             weights=tf.reshape(weights, [-1]), step=step)
        else:
            loss = self.task(tf.boolean_mask(output, valid), tf.boolean_mask(labels, valid), candidates,
                             weights=tf.boolean_mask(weights, valid), step=step)
        return loss if extra is None else loss + extra
