"""Top-K retrieval that removes each query's history from the ranking."""

from __future__ import annotations

import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrec_attn.features.serializable import register
from tfrec_attn.layers.interests import aggregate_interests


def mask_positions(scores: tf.Tensor, positions: tf.Tensor) -> tf.Tensor:
    """Sets ``scores[row, positions[row, j]]`` to -inf wherever ``positions >= 0``.

    Args:
        scores: float [b, N].
        positions: int [b, H]. Candidate rows to exclude per query; negative = none.
    """
    positions = tf.cast(positions, tf.int64)
    coords = tf.where(positions >= 0)  # [n, 2] (row, slot)
    cols = tf.gather_nd(positions, coords)
    coords = tf.stack([coords[:, 0], cols], axis=1)
    minus_inf = tf.fill(tf.shape(cols), tf.constant(float("-inf"), scores.dtype))
    return tf.tensor_scatter_nd_update(scores, coords, minus_inf)


def mask_positions_per_query(scores: tf.Tensor, positions: tf.Tensor) -> tf.Tensor:
    """:func:`mask_positions` of every one of a row's K queries: ``scores`` float [b, K, N],
    ``positions`` int [b, H] (the row's exclusions, the same for its K queries)."""
    shape = tf.shape(scores)
    flat = mask_positions(tf.reshape(scores, tf.stack([-1, shape[2]])), tf.repeat(positions, shape[1], axis=0))
    return tf.reshape(flat, shape)


@register
class ExcludingBruteForce(tfrs.layers.factorized_top_k.BruteForce):
    """TFRS ``BruteForce`` whose queries can exclude candidates by row position.

    TFRS's ``query_with_exclusions`` needs a static number of exclusions and ``k +
    exclusions <= candidates``; histories have neither guarantee, so this masks the
    excluded rows' scores to -inf before ``top_k`` (exact, any history length).

    Call ``index(candidates [N, d], identifiers [N])`` first, then
    ``query(queries [b, d], exclude_positions [b, H], k)`` -> (scores [b, k'], ids [b, k'])
    (queries [b, K, d]: a row's score is the max over its K queries)
    with ``k' = min(k, N)``; excluded rows never appear unless fewer than ``k`` remain,
    in which case the tail holds -inf scores.
    """

    def index(self, candidates, identifiers=None):
        result = super().index(candidates, identifiers)
        self.built = True  # the index's tensors are its state
        return result

    def query(self, queries, exclude_positions=None, k=None):
        if queries.shape.rank == 3:  # [b, K, d]: several queries per row (interests), max over K
            return self.query_interests(queries, None, exclude_positions, k)[:2]
        k = k if k is not None else self._k
        if self._candidates is None:
            raise ValueError("call `index(candidates, identifiers)` before querying")
        scores = self._compute_score(queries, self._candidates)
        if exclude_positions is not None:
            scores = mask_positions(scores, exclude_positions)
        k = tf.minimum(k, tf.shape(scores)[1])
        values, indices = tf.math.top_k(scores, k=k)
        return values, tf.gather(self._identifiers, indices)

    def query_interests(self, queries, weights, exclude_positions=None, k=None, aggregation: str = "max"):
        """Several queries per row: ``queries`` [b, K, d] with ``weights`` [b, K], merged by
        :func:`~tfrec_attn.layers.interests.aggregate_interests` after the exclusions (each
        interest ranks the catalogue without them). Returns (scores [b, k'], ids [b, k'], int32
        [b, k'] the interest each item's score comes from)."""
        k = k if k is not None else self._k
        if self._candidates is None:
            raise ValueError("call `index(candidates, identifiers)` before querying")
        scores = tf.einsum("bkd,nd->bkn", queries, self._candidates)
        if exclude_positions is not None:
            scores = mask_positions_per_query(scores, exclude_positions)
        merged, source = aggregate_interests(scores, weights, aggregation)
        k = tf.minimum(k, tf.shape(merged)[1])
        values, indices = tf.math.top_k(merged, k=k)
        return values, tf.gather(self._identifiers, indices), tf.gather(source, indices, batch_dims=1)

    def get_config(self):
        return {"k": self._k, "name": self.name}
