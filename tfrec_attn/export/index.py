"""Top-K indexes for exports: exact brute force (TF Serving) or ScaNN (needs ``import scann``)."""

from __future__ import annotations

import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrec_attn.layers.topk import ExcludingBruteForce

INDEX_TYPES = ("brute_force", "scann")


class ScaNNWithExclusions(tf.Module):
    """TFRS ``ScaNN`` that over-fetches ``k + exclusion_budget`` and drops excluded ids.

    ScaNN cannot mask candidates inside its search, so a query whose history holds more
    than ``exclusion_budget`` of its top results may return fewer than ``k`` real items
    (the tail is padded with ``""`` / -inf).
    """

    def __init__(self, k: int, exclusion_budget: int = 200, num_leaves: int | None = None,
                 num_leaves_to_search: int | None = None, num_reordering_candidates: int | None = None,
                 name: str | None = None):
        super().__init__(name=name)
        self.k = k
        self.fetch = k + exclusion_budget
        self.options = dict(num_leaves=num_leaves, num_leaves_to_search=num_leaves_to_search,
                            num_reordering_candidates=num_reordering_candidates)
        self.scann = None

    def index(self, candidates, identifiers):
        n = int(candidates.shape[0])
        leaves = self.options["num_leaves"] or max(1, min(2000, int(n ** 0.5)))
        search = self.options["num_leaves_to_search"] or max(1, leaves // 10)
        reorder = self.options["num_reordering_candidates"] or max(self.fetch, 4 * self.fetch)
        self.fetch = min(self.fetch, n)
        self.scann = tfrs.layers.factorized_top_k.ScaNN(
            k=self.fetch, num_leaves=leaves, num_leaves_to_search=min(search, leaves),
            num_reordering_candidates=reorder)
        self.scann.index(candidates, identifiers)
        return self

    def query(self, queries, exclude_ids, k=None):
        k = k or self.k
        scores, ids = self.scann(queries, k=self.fetch)
        excluded = tf.reduce_any(tf.equal(ids[:, :, tf.newaxis], exclude_ids[:, tf.newaxis, :]), axis=2)
        scores = tf.where(excluded, tf.constant(float("-inf"), scores.dtype), scores)
        top, order = tf.math.top_k(scores, k=tf.minimum(k, tf.shape(scores)[1]))
        ids = tf.gather(ids, order, batch_dims=1)
        return top, tf.where(tf.math.is_inf(top), tf.constant("", ids.dtype), ids)


def build_index(kind: str, candidates, identifiers, k: int, **scann_options):
    """An index over ``candidates [N, d]`` named by ``identifiers [N]`` (raw string ids).

    Args:
        kind: str. ``brute_force`` (exact; only stock TF ops) or ``scann``.
    """
    if kind == "brute_force":
        return ExcludingBruteForce(k=k, name="brute_force").index(candidates, identifiers)
    if kind == "scann":
        try:
            import scann  # noqa: F401  (registers the ScaNN ops)
        except ImportError as error:
            raise ImportError("export.index=scann needs the `scann` package: pip install scann==1.4.2") from error
        return ScaNNWithExclusions(k, **scann_options).index(candidates, identifiers)
    raise ValueError(f"export.index must be one of {', '.join(INDEX_TYPES)}, got {kind!r}")
