"""The ranking network: target attention over the history -> MLP -> interaction and rating
heads (a functional Keras model)."""

from __future__ import annotations

import math

import tensorflow as tf

from tfrec_attn.features.ranking import NUM_GAP_BUCKETS
from tfrec_attn.features.serializable import register
from tfrec_attn.features.vocab import FIRST_ITEM_INDEX
from tfrec_attn.layers.item_features import ItemFeatureEmbedding
from tfrec_attn.layers.rating_head import BiasedRatingHead
from tfrec_attn.layers.target_attention import TARGET_ATTENTION_TYPES, BstAttention, DinAttention


class _Blocks:
    """The ranking network's layers and the two halves of its forward pass, shared by the
    functional graph and the inference methods (one source for both)."""

    def __init__(self, items, ratings, gaps, event_dropout, target, users, mlp, score_head, retrieval_items,
                 retrieval_scale, retrieval_projections, num_ratings, user_feature_sizes, history_mean):
        self.items, self.ratings, self.gaps, self.event_dropout = items, ratings, gaps, event_dropout
        self.target, self.users, self.mlp, self.score_head = target, users, mlp, score_head
        self.retrieval_items, self.retrieval_scale = retrieval_items, retrieval_scale
        self.retrieval_projections = retrieval_projections
        self.num_ratings, self.user_feature_sizes, self.history_mean = num_ratings, user_feature_sizes, history_mean

    def events(self, inputs, training=None):
        """History events: item embedding (+ rating, + time gap), 0 at padding; (events, mask)."""
        history = inputs["history"]
        mask = history >= FIRST_ITEM_INDEX
        events = self.items(history)
        if self.ratings is not None:
            events = events + self.ratings(tf.clip_by_value(inputs["history_ratings"], 0, self.num_ratings))
        if self.gaps is not None:
            events = events + self.gaps(tf.clip_by_value(inputs["history_gaps"], 0, NUM_GAP_BUCKETS - 1))
        return self.event_dropout(events * tf.cast(mask, events.dtype)[..., tf.newaxis], training=training), mask

    def head(self, pooled, candidates, events, mask, inputs, training=None):
        """Everything after the target attention: (MLP output x, interaction logits [b, C],
        retrieval scores [b, C] or None)."""
        count = tf.reduce_sum(tf.cast(mask, events.dtype), axis=1, keepdims=True)  # [b, 1]
        mean = tf.math.divide_no_nan(tf.reduce_sum(events, axis=1), count)  # [b, d]
        per_user = [mean, tf.math.log1p(count)] if self.history_mean else [tf.math.log1p(count)]
        for i, layer in enumerate(self.users):
            size = self.user_feature_sizes[i]
            per_user.append(layer(tf.clip_by_value(inputs["user_features"][:, i], 0, size - 1)))
        per_user = tf.concat(per_user, axis=-1)
        num_candidates = tf.shape(candidates)[1]
        per_user = tf.repeat(per_user[:, tf.newaxis, :], num_candidates, axis=1)
        parts = [pooled, candidates, pooled * candidates, per_user]
        retrieval_scores = None
        if self.retrieval_items is not None:
            # What retrieval knows: its score of each candidate (the best of the user's query
            # vectors), fed to the MLP and added to the logit.
            query = inputs["retrieval_query"]  # [b, K, r]
            item_vectors = self.retrieval_items(inputs["candidates"])  # [b, C, r]
            per_interest = tf.einsum("bkr,bcr->bck", query, item_vectors)
            retrieval_scores = tf.reduce_max(per_interest, axis=-1)  # [b, C]
            # (Not normalized over the list: a candidate's score never depends on the others.)
            parts.append(retrieval_scores[..., tf.newaxis])
            if self.retrieval_projections:
                best = tf.gather(query, tf.argmax(per_interest, axis=-1, output_type=tf.int32), batch_dims=1)
                q, e = (layer(v) for layer, v in zip(self.retrieval_projections, (best, item_vectors)))
                parts += [q, e, q * e]
        x = tf.concat(parts, axis=-1)
        for layer in self.mlp:
            x = layer(x, training=training)
        scores = tf.squeeze(self.score_head(x), -1)
        if self.retrieval_scale is not None:
            scores = scores + self.retrieval_scale(retrieval_scores)
        return x, scores, retrieval_scores


@register
class ScalarWeight(tf.keras.layers.Layer):
    """``w * x`` with one trainable scalar ``w`` (initial value ``initial``)."""

    def __init__(self, initial: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.initial = float(initial)

    def build(self, input_shape):
        self.weight = self.add_weight("weight", [], initializer=tf.keras.initializers.Constant(self.initial))
        super().build(input_shape)

    def call(self, x):
        return tf.cast(self.weight, x.dtype) * x

    def get_config(self):
        return {**super().get_config(), "initial": self.initial}


@register
class RankingNetwork(tf.keras.Model):
    """Scores candidates for a user from the history, with explanations.

    Each history event is its item's embedding (id + side features, shared with the
    candidates) plus, when enabled, an embedding of the rating the user gave it and of how
    long before the user's newest event it happened. Each candidate attends over the events
    (:mod:`tfrec_attn.layers.target_attention`); the pooled interest, the candidate, their
    product, the mean of the history and the user's features go through an MLP to two
    heads: an interaction logit and a rating in ``[rating_min, rating_max]``.

    Args:
        num_indices: int. Item vocabulary size (0 = padding, 1 = OOV).
        embedding_dim: int.
        attention: str. ``din`` or ``bst``.
        attention_units: list of int. DIN's activation MLP.
        normalization: str. DIN: ``none`` (the paper) or ``softmax``.
        num_heads: int. BST.
        num_blocks: int. BST transformer blocks.
        mlp_units: list of int. Hidden widths of the MLP before the heads.
        dropout: float.
        item_feature_dim: int. Width of the item feature table (0: ids only).
        num_ratings: int. Distinct per-event rating values (0: no rating embeddings);
            input values 1..num_ratings, 0 = unknown.
        time_gaps: bool. Embed each event's time gap bucket (0 = unknown).
        user_feature_sizes: list of int. Vocabulary size of each user feature (index 0 =
            unknown); empty: no user features.
        history_mean: bool. Also give the MLP the mean of the history's events (a route from
            the history to the heads that bypasses attention; DIN has none).
        rating_biases: bool. The rating head corrects a biased baseline read from the history
            (:class:`~tfrec_attn.layers.rating_head.BiasedRatingHead`: mean + item bias + the
            user's bias from the ratings in the history) instead of predicting from scratch.
        rating_min, rating_max, rating_mean: float. The rating head's range and initial value.
        retrieval_dim: int. Width of a frozen retrieval model's vectors (0: the ranker does not
            read retrieval). Then each candidate's retrieval score ``max_k q_k . e_c`` (the
            user's ``retrieval_interests`` query vectors against the candidate's retrieval
            embedding, a frozen table filled with :meth:`set_retrieval_items`) is added to the
            interaction logit with a learned scale (init 1: training starts from retrieval's
            order and learns what it misses) and goes to the MLP.
        retrieval_interests: int. K, the retrieval model's query vectors per user.
        retrieval_embeddings: bool. Also give the MLP the (projected) best query vector and
            the candidate's retrieval embedding, and their product.

    Inputs (a dict; int64 unless said):
        history [b, H]: model item indices, right-padded with 0 (OOV items are ignored).
        history_ratings [b, H], history_gaps [b, H]: per-event rating and time-gap ids.
        candidates [b, C]: model item indices.
        user_features [b, U]: one id per user feature.
        retrieval_query float32 [b, K, retrieval_dim] (only with ``retrieval_dim``): the frozen
            retrieval model's query vectors for the history.

    Outputs (a dict):
        scores float [b, C] (interaction logits), rating float [b, C], attention float [b, C, H]
        (0 at padding and OOV events); with ``retrieval_dim`` also ``retrieval_scores`` float
        [b, C] (the frozen retrieval model's scores of the candidates).
    """

    def __init__(self, num_indices: int, embedding_dim: int = 32, attention: str = "din",
                 attention_units=(64, 32), normalization: str = "none", num_heads: int = 2,
                 num_blocks: int = 1, mlp_units=(128, 64), dropout: float = 0.1, item_feature_dim: int = 0,
                 num_ratings: int = 5, time_gaps: bool = True, user_feature_sizes=(),
                 rating_min: float = 1.0, rating_max: float = 5.0, rating_mean: float = 3.5,
                 history_mean: bool = True, retrieval_dim: int = 0, retrieval_interests: int = 1,
                 retrieval_embeddings: bool = False, rating_biases: bool = False, **kwargs):
        if attention not in TARGET_ATTENTION_TYPES:
            raise ValueError(f"attention must be one of {', '.join(TARGET_ATTENTION_TYPES)}, got {attention!r}")
        if not rating_min < rating_mean < rating_max:
            raise ValueError(f"need rating_min < rating_mean < rating_max, got {rating_min}, {rating_mean}, "
                             f"{rating_max}")
        attention_units = [int(u) for u in attention_units]
        mlp_units = [int(u) for u in mlp_units]
        user_feature_sizes = [int(s) for s in user_feature_sizes]
        # === Layers ===
        items = ItemFeatureEmbedding(num_indices, embedding_dim, item_feature_dim, name="items")
        ratings = tf.keras.layers.Embedding(num_ratings + 1, embedding_dim, name="event_ratings") \
            if num_ratings else None
        gaps = tf.keras.layers.Embedding(NUM_GAP_BUCKETS, embedding_dim, name="event_gaps") if time_gaps else None
        if attention == "din":
            target = DinAttention(attention_units, normalization, name="target_attention")
        else:
            target = BstAttention(embedding_dim, num_heads, num_blocks, dropout, name="target_attention")
        users = [tf.keras.layers.Embedding(size, max(4, min(16, embedding_dim // 2)), name=f"user_feature_{i}")
                 for i, size in enumerate(user_feature_sizes)]
        event_dropout = tf.keras.layers.Dropout(dropout, name="event_dropout")
        mlp = []
        for i, units in enumerate(mlp_units):
            mlp += [tf.keras.layers.Dense(units, activation="relu", name=f"mlp_{i}"),
                    tf.keras.layers.Dropout(dropout, name=f"mlp_dropout_{i}")]
        score_head = tf.keras.layers.Dense(1, name="score")
        retrieval_items = tf.keras.layers.Embedding(num_indices, retrieval_dim, embeddings_initializer="zeros",
                                                    trainable=False, name="retrieval_items") if retrieval_dim else None
        retrieval_scale = ScalarWeight(1.0, name="retrieval_scale") if retrieval_dim else None
        retrieval_projections = [tf.keras.layers.Dense(embedding_dim, name=f"retrieval_{side}_projection")
                                 for side in ("query", "item")] if retrieval_dim and retrieval_embeddings else []
        share = (rating_mean - rating_min) / (rating_max - rating_min)
        if rating_biases:
            rating_head = BiasedRatingHead(num_indices, rating_min, rating_max, rating_mean, name="rating")
        else:
            rating_head = tf.keras.layers.Dense(1, name="rating",
                                                bias_initializer=tf.keras.initializers.Constant(
                                                    math.log(share / (1.0 - share))))

        blocks = _Blocks(items, ratings, gaps, event_dropout, target, users, mlp, score_head, retrieval_items,
                         retrieval_scale, retrieval_projections, num_ratings, user_feature_sizes, history_mean)

        # === Functional model ===
        inputs = {
            "history": tf.keras.Input(shape=(None,), dtype=tf.int64, name="history"),
            "history_ratings": tf.keras.Input(shape=(None,), dtype=tf.int64, name="history_ratings"),
            "history_gaps": tf.keras.Input(shape=(None,), dtype=tf.int64, name="history_gaps"),
            "candidates": tf.keras.Input(shape=(None,), dtype=tf.int64, name="candidates"),
            "user_features": tf.keras.Input(shape=(len(user_feature_sizes),), dtype=tf.int64, name="user_features"),
        }
        if retrieval_dim:
            inputs["retrieval_query"] = tf.keras.Input(shape=(retrieval_interests, retrieval_dim), dtype=tf.float32,
                                                       name="retrieval_query")
        events, mask = blocks.events(inputs)
        candidates = items(inputs["candidates"])
        pooled, weights = target(events, mask, candidates)
        x, scores, retrieval_scores = blocks.head(pooled, candidates, events, mask, inputs)
        outputs = {}
        if retrieval_dim:
            outputs["retrieval_scores"] = retrieval_scores
        if rating_biases:
            rating = rating_head(x, inputs["history"],
                                 tf.clip_by_value(inputs["history_ratings"], 0, max(num_ratings, 0)),
                                 inputs["candidates"])
        else:
            rating = rating_min + (rating_max - rating_min) * tf.sigmoid(tf.squeeze(rating_head(x), -1))
        outputs.update(scores=scores, rating=rating, attention=weights)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self._blocks = blocks  # a plain object: its layers are tracked through the graph only

        # === Config ===
        self.num_indices = num_indices
        self.embedding_dim = embedding_dim
        self.attention_type = attention
        self.attention_units = attention_units
        self.normalization = normalization
        self.num_heads = num_heads
        self.num_blocks = num_blocks
        self.mlp_units = mlp_units
        self.dropout = dropout
        self.item_feature_dim = item_feature_dim
        self.num_ratings = num_ratings
        self.time_gaps = time_gaps
        self.user_feature_sizes = user_feature_sizes
        self.rating_min = rating_min
        self.rating_max = rating_max
        self.rating_mean = rating_mean
        self.history_mean = history_mean
        self.retrieval_dim = int(retrieval_dim)
        self.retrieval_interests = int(retrieval_interests)
        self.retrieval_embeddings = bool(retrieval_embeddings)
        self.rating_biases = bool(rating_biases)
        self.items = items
        self.retrieval_items = retrieval_items

    @property
    def target_attention(self):
        """The target attention layer (DIN or BST)."""
        return self._blocks.target

    def event_embeddings(self, inputs):
        """(events float [b, H, d], mask bool [b, H]) of the inputs' history, as the network
        computes them at inference (item + rating + time-gap embeddings, 0 at padding)."""
        return self._blocks.events(inputs, training=False)

    def interaction_scores(self, pooled, events, mask, inputs):
        """The interaction logits [b, C] from a pooled interest per candidate (float
        [b, C, d], e.g. the target attention of :meth:`event_embeddings`' events) and the
        rest of the network's inputs, at inference: the part of the network after the target
        attention, so a caller that pools the events itself scores exactly as the network."""
        candidates = self.items(inputs["candidates"])
        return self._blocks.head(pooled, candidates, events, mask, inputs, training=False)[1]

    def dummy_inputs(self) -> dict:
        """A one-row, one-candidate batch of every input (builds the weights)."""
        one = tf.ones((1, 1), tf.int64)
        inputs = {"history": one * 2, "history_ratings": one, "history_gaps": one, "candidates": one * 2,
                  "user_features": tf.zeros((1, len(self.user_feature_sizes)), tf.int64)}
        if self.retrieval_dim:
            inputs["retrieval_query"] = tf.zeros((1, self.retrieval_interests, self.retrieval_dim))
        return inputs

    def set_retrieval_items(self, table) -> None:
        """Fills the frozen retrieval item table (float [num_indices, retrieval_dim], in this
        network's item indices; rows of items the retrieval model lacks stay 0)."""
        self.retrieval_items.embeddings.assign(tf.cast(table, self.retrieval_items.embeddings.dtype))

    def get_config(self):
        return {
            "name": self.name, "trainable": self.trainable,
            "num_indices": self.num_indices, "embedding_dim": self.embedding_dim,
            "attention": self.attention_type, "attention_units": self.attention_units,
            "normalization": self.normalization, "num_heads": self.num_heads, "num_blocks": self.num_blocks,
            "mlp_units": self.mlp_units, "dropout": self.dropout, "item_feature_dim": self.item_feature_dim,
            "num_ratings": self.num_ratings, "time_gaps": self.time_gaps,
            "user_feature_sizes": self.user_feature_sizes, "rating_min": self.rating_min,
            "rating_max": self.rating_max, "rating_mean": self.rating_mean, "history_mean": self.history_mean,
            "retrieval_dim": self.retrieval_dim, "retrieval_interests": self.retrieval_interests,
            "retrieval_embeddings": self.retrieval_embeddings, "rating_biases": self.rating_biases,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
