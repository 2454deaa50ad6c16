"""Multi-interest retrieval: the transformer user tower's outputs give K interests
(:class:`~tfrec_attn.layers.interests.InterestExtractor`, or capsules by dynamic routing:
``CapsuleExtractor``), each a query of its own; an
item's score is the max over the user's interests.

Training (at every position, as the single-vector model): each target is predicted by one
interest, picked from the interests' affinities to the target (no gradient through the
pick) —

* ``hard``: the closest interest (ComiRec / MIND);
* ``sampled``: an interest drawn from ``softmax(affinity / selection_temperature)`` (the
  soft, sampled selection of BaM, 2024), so interests that are not yet closest still learn;

then the configured softmax task, unchanged; or

* ``max``: no pick — every candidate, the target and each negative, is scored by its best
  interest inside the softmax, exactly as retrieval scores it (an interest that scores a
  negative high is pushed down, which a pick never does).

``diversity_weight`` adds the mean pairwise
cosine of a user's interests above ``diversity_margin`` to the loss (against collapse);
``balance_weight`` adds the load-balancing loss of mixtures of experts (Switch Transformer,
Fedus et al. 2021), ``K * sum_k f_k p_k`` with ``f_k`` the share of the batch's targets
interest ``k`` scores highest and ``p_k`` its mean ``softmax(affinity / selection_temperature)``
share: 1 when the targets are spread evenly, up to K when one interest takes them all
(against an interest that wins no target).

Retrieval merges the K interests' rankings by ``aggregation`` (:func:`aggregate_interests`):
``max`` (an item scores its best interest's dot product) or ``proportional`` (the list's slots
are shared among the interests in proportion to their weight, their share of the history,
by D'Hondt's rule: the j-th best item of interest k scores ``w_k / j``, so a list of N holds
about ``N w_k`` items of each interest, each its best ones — a calibrated list, Steck 2018).
"""

from __future__ import annotations

import tensorflow as tf

from tfrec_attn.features.serializable import register
from tfrec_attn.features.vocab import FIRST_ITEM_INDEX, history_rows
from tfrec_attn.layers.interests import AGGREGATION_TYPES, aggregate_interests
from tfrec_attn.layers.topk import mask_positions_per_query
from tfrec_attn.models.retrieval import SequentialRetrievalModel, _deserialize, compact_history
from tfrec_attn.tasks.next_item import global_weighted_mean

SELECTION_TYPES = ("hard", "sampled", "max")


def balance_loss(affinity: tf.Tensor, weights: tf.Tensor, temperature: float = 1.0) -> tf.Tensor:
    """The load-balancing loss ``K * sum_k f_k p_k`` of ``affinity`` [..., K] (each target's
    affinity to each interest) over the targets weighted by ``weights`` [...]: ``f_k`` the
    (weighted) share of the targets whose highest affinity is interest ``k`` (no gradient),
    ``p_k`` the mean of ``softmax(affinity / temperature)_k`` (the gradient: it moves targets
    away from the interests that win more than their share). 0 without any target."""
    affinity = tf.cast(affinity, tf.float32)
    k = tf.shape(affinity)[-1]
    flat = tf.reshape(affinity, tf.stack([-1, k]))
    weights = tf.reshape(tf.cast(weights, tf.float32), [-1, 1])
    total = tf.reduce_sum(weights)
    wins = tf.math.divide_no_nan(tf.reduce_sum(tf.one_hot(tf.argmax(flat, axis=-1), k) * weights, axis=0), total)
    shares = tf.math.divide_no_nan(tf.reduce_sum(tf.nn.softmax(flat / temperature) * weights, axis=0), total)
    return tf.cast(k, tf.float32) * tf.reduce_sum(tf.stop_gradient(wins) * shares)


def mean_pairwise_cosine(vectors: tf.Tensor, margin: float | None = None) -> tf.Tensor:
    """Mean cosine over the K (K - 1) / 2 pairs of interests: [..., K, d] -> [...]; with
    ``margin``, the mean of ``max(0, cosine - margin)`` (only pairs closer than it count)."""
    unit = tf.math.l2_normalize(tf.cast(vectors, tf.float32), axis=-1)
    gram = tf.linalg.matmul(unit, unit, transpose_b=True)
    k = tf.shape(vectors)[-2]
    if margin is not None:
        gram = tf.nn.relu(gram - margin)
    off_diagonal = tf.reduce_sum(gram * (1.0 - tf.eye(k)), axis=[-2, -1])
    k = tf.cast(k, tf.float32)
    return tf.math.divide_no_nan(off_diagonal, k * (k - 1.0))


@register
class MultiInterestRetrievalModel(SequentialRetrievalModel):
    """Transformer two-tower retrieval with K interests per user.

    Args:
        item_tower, user_tower, task, scale_embeddings, item_bias, future_weight,
            static_shapes: as :class:`SequentialRetrievalModel`.
        extractor: ``InterestExtractor`` (or its serialized config).
        selection: str. ``hard``, ``sampled`` or ``max`` (see the module docstring).
        aggregation: str. How retrieval merges the interests (:func:`aggregate_interests`).
        selection_temperature: float. ``sampled``: affinities / temperature.
        diversity_weight: float. Weight in the loss of the interests' mean pairwise cosine
            above ``diversity_margin``.
        diversity_margin: float. Pairs of interests less similar than this cost nothing
            (-1: every pair costs its cosine).
        balance_weight: float. Weight in the loss of :func:`balance_loss` (0: none).
        seed: int. Seeds the sampled selection (with the training step).

    ``call(history)`` returns the queries [b, K, d (+1)]; every scoring path (the evaluation's
    :meth:`score_items`, the export's index and ``rank``) merges them by ``aggregation``
    (:meth:`merge_scores`).

    Example:
        >>> model = build_retrieval_model(config.model, config.loss, vocab.num_indices)  # interests: 4
        >>> queries = model(history)           # [b, 4, d]
        >>> scores = model.score_items(history)  # [b, num_indices - 2], max over the 4
    """

    def __init__(self, item_tower, user_tower, task, extractor, selection: str = "hard",
                 selection_temperature: float = 1.0, diversity_weight: float = 0.0, diversity_margin: float = -1.0,
                 seed: int = 0, aggregation: str = "max", balance_weight: float = 0.0, **kwargs):
        super().__init__(item_tower, user_tower, task, **kwargs)
        if selection not in SELECTION_TYPES:
            raise ValueError(f"selection must be one of {', '.join(SELECTION_TYPES)}, got {selection!r}")
        if aggregation not in AGGREGATION_TYPES:
            raise ValueError(f"aggregation must be one of {', '.join(AGGREGATION_TYPES)}, got {aggregation!r}")
        self.aggregation = aggregation
        self.extractor = _deserialize(extractor)
        self.num_interests = self.extractor.num_interests
        self.selection = selection
        self.selection_temperature = selection_temperature
        self.diversity_weight = diversity_weight
        self.diversity_margin = diversity_margin
        self.balance_weight = balance_weight
        self.seed = seed

    def get_config(self):
        return {**super().get_config(), "extractor": tf.keras.utils.serialize_keras_object(self.extractor),
                "selection": self.selection, "selection_temperature": self.selection_temperature,
                "diversity_weight": self.diversity_weight, "diversity_margin": self.diversity_margin,
                "seed": self.seed, "aggregation": self.aggregation, "balance_weight": self.balance_weight}

    # -- interests ------------------------------------------------------------------------
    def interests(self, history, training=False, ratings=None):
        """The interests of any history [b, H] of model indices (oldest first; ``ratings``
        [b, H]: its events' ratings, for a rating-aware tower).

        Returns:
            (queries float [b, K, d (+1)], attention float [b, K, L] over the compact history,
            compact int [b, L]: :func:`compact_history` of ``history``).
        """
        compact, rating_ids = self.compact(history, ratings)
        mask = compact >= FIRST_ITEM_INDEX
        sequence = self.encode(compact, training=training, rating_ids=rating_ids)["sequence"]
        vectors, attention = self.extractor(sequence, mask, training=training)
        return self._query(vectors), attention, compact

    def interest_weights(self, compact, queries):
        """Each interest's share of the history: the fraction of the real items of ``compact``
        [b, L] that score highest under it ([b, K]; 0 for an empty history)."""
        items = tf.cast(self.candidate_vectors(compact), tf.float32)
        nearest = tf.argmax(tf.einsum("bkd,bld->blk", tf.cast(queries, tf.float32), items), axis=-1)
        mask = tf.cast(compact >= FIRST_ITEM_INDEX, tf.float32)
        counts = tf.reduce_sum(tf.one_hot(nearest, self.num_interests) * mask[..., tf.newaxis], axis=1)
        return tf.math.divide_no_nan(counts, tf.reduce_sum(mask, axis=1, keepdims=True))

    def call(self, history, training=False, ratings=None):
        """Queries [b, K, d (+1)]; score = max over K of query . candidate."""
        return self.interests(history, training=training, ratings=ratings)[0]

    def position_queries(self, history, ratings=None):
        """Queries [b, L, K, d (+1)] after every position of a compact ``history`` [b, L]."""
        sequence = self.encode(history, rating_ids=self.rating_ids(history, ratings))["sequence"]
        return self._query(self.extractor(sequence, history >= FIRST_ITEM_INDEX, causal=True)[0])

    def explain_history(self, history, ratings=None):
        """The interests' attention over ``history`` [b, H], averaged over interests ([b, H])."""
        _, attention, _ = self.interests(history, ratings=ratings)
        return self.to_input_positions(history, tf.reduce_mean(tf.cast(attention, tf.float32), axis=1))

    def aggregation_weights(self, history, queries, compact=None):
        """What :meth:`merge_scores` weighs the interests by for ``history`` [b, H] (model
        indices; not read when its ``compact`` history is given): :meth:`interest_weights`
        ([b, K]), or None when ``aggregation`` reads none."""
        if self.aggregation == "max":
            return None
        if compact is None:
            compact = compact_history(history, self.max_len)
        return self.interest_weights(compact, queries)

    def merge_scores(self, history, queries, scores, compact=None):
        """The interests' ``scores`` [b, K, n] of the catalogue's rows (then any extra items) for
        ``history`` [b, H] (model indices) merged by ``aggregation``: (float [b, n], int32 [b, n]
        the interest each item's score comes from). ``proportional`` ranks each interest's list
        without the history's items (they score -inf) and weighs the interests by
        :meth:`interest_weights` (``compact``: :func:`compact_history` of ``history``)."""
        if self.aggregation == "max":
            return aggregate_interests(scores, None, "max")
        rows = history_rows(history)  # the history's rows, as the export excludes them
        return aggregate_interests(mask_positions_per_query(scores, rows),
                                   self.aggregation_weights(history, queries, compact), self.aggregation)

    @tf.function(reduce_retracing=True)
    def score_items(self, history, extra_vectors=None, ratings=None):
        """The interests' dot products merged by ``aggregation``: [b, num_indices - 2] (+ [b, n]
        over ``extra_vectors``). Finite everywhere: under ``proportional`` the history's own
        items score 0, below every other item (whose scores are > 0)."""
        queries, _, compact = self.interests(history, ratings=ratings)
        queries = tf.cast(queries, tf.float32)
        table = tf.cast(self.item_embeddings(), tf.float32)
        if extra_vectors is not None:
            table = tf.concat([table, tf.cast(extra_vectors, tf.float32)], axis=0)
        merged = self.merge_scores(history, queries, tf.einsum("bkd,nd->bkn", queries, table), compact)[0]
        return tf.where(tf.math.is_finite(merged), merged, 0.0)

    # -- training -------------------------------------------------------------------------
    def training_queries(self, history, labels, training=False, rating_ids=None):
        mask = history >= FIRST_ITEM_INDEX
        sequence = self.encode(history, training=training, rating_ids=rating_ids)["sequence"]
        vectors, _ = self.extractor(sequence, mask, causal=True, training=training)  # [b, L, K, d]
        queries = self._query(vectors)
        target = labels[..., 0] if labels.shape.rank == 3 else labels
        valid = target >= FIRST_ITEM_INDEX
        penalties = []
        if self.diversity_weight:
            penalties.append(self.diversity_weight * global_weighted_mean(mean_pairwise_cosine(
                vectors, self.diversity_margin if self.diversity_margin > -1.0 else None),
                                                                          tf.cast(valid, tf.float32)))
        affinity = None
        if self.selection != "max" or self.balance_weight:
            targets = tf.stop_gradient(tf.cast(self.candidate_vectors(tf.maximum(target, 0)), tf.float32))
            affinity = tf.einsum("blkd,bld->blk", tf.cast(queries, tf.float32), targets)
        if self.balance_weight:
            # each replica balances its own batch; summed over replicas, their mean
            penalties.append(tf.nn.scale_regularization_loss(
                self.balance_weight * balance_loss(affinity, valid, self.selection_temperature)))
        penalty = tf.add_n(penalties) if penalties else None
        if self.selection == "max":
            return queries, penalty
        affinity = tf.stop_gradient(affinity)
        if self.selection == "sampled" and training:
            step = self.optimizer.iterations if self.optimizer is not None else 0
            seed = tf.stack([tf.constant(self.seed, tf.int32), tf.cast(step, tf.int32)])
            flat = tf.reshape(affinity, [-1, self.num_interests]) / self.selection_temperature
            pick = tf.reshape(tf.random.stateless_categorical(flat, 1, seed=seed, dtype=tf.int32), tf.shape(target))
        else:
            pick = tf.argmax(affinity, axis=-1, output_type=tf.int32)
        return tf.gather(queries, pick, batch_dims=2), penalty  # [b, L, d]
