"""Softmax objectives for next-item prediction.

All tasks take query embeddings ``[n, d]``, their next-item labels ``[n]`` (model
indices; 0 = padding and 1 = OOV are never targets), the candidate table ``[V, d]`` of
the item tower and optional per-query ``weights`` ``[n]`` (0 for padding positions when
shapes must stay static, e.g. under XLA), and return the weighted mean cross-entropy.

* :class:`FullSoftmaxTask`: softmax over the whole catalogue (exact; cost n x V).
* :class:`SampledSoftmaxTask`: ``tf.nn.sampled_softmax_loss`` with negatives drawn from
  the training frequencies ``count ** alpha``; the logQ correction and accidental-hit
  removal are those of TensorFlow's implementation. When the catalogue has no more items
  than ``num_negatives`` it is exactly the full softmax.
* :class:`InBatchSoftmaxTask`: ``tfrs.tasks.Retrieval`` over the batch's own labels, with
  logQ correction (``candidate_sampling_probability``) and accidental-hit removal.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrec_attn.features.vocab import FIRST_ITEM_INDEX

_NEG = -1e9


def _weighted_mean(losses, weights):
    if weights is None:
        return tf.reduce_mean(losses)
    weights = tf.cast(weights, losses.dtype)
    return tf.math.divide_no_nan(tf.reduce_sum(losses * weights), tf.reduce_sum(weights))


def _item_column_mask(num_indices: int) -> tf.Tensor:
    return tf.concat([tf.zeros([FIRST_ITEM_INDEX]), tf.ones([num_indices - FIRST_ITEM_INDEX])], 0)


class FullSoftmaxTask(tf.keras.layers.Layer):
    """Cross-entropy over every catalogue item.

    Args:
        temperature: float. Logits are divided by it.
        label_smoothing: float. Mass spread uniformly over the other real items.
    """

    def __init__(self, temperature: float = 1.0, label_smoothing: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.temperature = temperature
        self.label_smoothing = label_smoothing

    def call(self, queries, labels, candidates, weights=None):
        queries = tf.cast(queries, tf.float32)
        candidates = tf.cast(candidates, tf.float32)
        logits = tf.matmul(queries, candidates, transpose_b=True) / self.temperature
        num_indices = tf.shape(candidates)[0]
        real = _item_column_mask(num_indices)
        logits = logits + (1.0 - real)[tf.newaxis] * _NEG
        if self.label_smoothing:
            eps = self.label_smoothing
            target = tf.one_hot(labels, num_indices) * (1.0 - eps)
            target += eps * real[tf.newaxis] / tf.reduce_sum(real)
            return _weighted_mean(-tf.reduce_sum(target * tf.nn.log_softmax(logits), axis=-1), weights)
        return _weighted_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits), weights)


class SampledSoftmaxTask(tf.keras.layers.Layer):
    """Sampled softmax with frequency-proportional negatives and logQ correction.

    Args:
        item_counts: array [V]. Training interactions per model index (pad/OOV ignored).
        num_negatives: int. Distinct negatives shared by the batch.
        alpha: float. Negatives ~ (count + 1) ** alpha.
        temperature: float.
    """

    def __init__(self, item_counts, num_negatives: int = 256, alpha: float = 0.75,
                 temperature: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        counts = np.asarray(item_counts, dtype=np.float64).copy()
        counts[:FIRST_ITEM_INDEX] = 0.0
        counts[FIRST_ITEM_INDEX:] += 1.0  # every item can be a negative
        self.unigrams = (counts ** alpha).tolist()
        self.unigrams[:FIRST_ITEM_INDEX] = [0.0] * FIRST_ITEM_INDEX
        self.num_items = len(counts) - FIRST_ITEM_INDEX
        self.num_negatives = num_negatives
        self.temperature = temperature
        self.exact = num_negatives >= self.num_items
        self._full = FullSoftmaxTask(temperature) if self.exact else None

    def call(self, queries, labels, candidates, weights=None):
        if self.exact:
            return self._full(queries, labels, candidates, weights)
        labels = tf.cast(labels[:, tf.newaxis], tf.int64)
        sampled = tf.random.fixed_unigram_candidate_sampler(
            true_classes=labels, num_true=1, num_sampled=self.num_negatives, unique=True,
            range_max=len(self.unigrams), unigrams=self.unigrams)
        losses = tf.nn.sampled_softmax_loss(
            weights=tf.cast(candidates, tf.float32),
            biases=tf.zeros([len(self.unigrams)]),
            labels=labels,
            inputs=tf.cast(queries, tf.float32) / self.temperature,
            num_sampled=self.num_negatives,
            num_classes=len(self.unigrams),
            sampled_values=sampled,
            remove_accidental_hits=True,
        )
        return _weighted_mean(losses, weights)


class InBatchSoftmaxTask(tf.keras.layers.Layer):
    """In-batch negatives via ``tfrs.tasks.Retrieval`` (logQ + accidental-hit removal).

    Args:
        item_counts: array [V]. Training counts, for the sampling probability (logQ).
        temperature: float.
        max_positions: int. At most this many positions per batch act as queries (the
            score matrix is max_positions^2).
    """

    def __init__(self, item_counts, temperature: float = 1.0, max_positions: int = 4096, **kwargs):
        super().__init__(**kwargs)
        counts = np.asarray(item_counts, dtype=np.float64)
        self.probability = tf.constant(counts / max(counts.sum(), 1.0), tf.float32)
        self.max_positions = max_positions
        self.retrieval = tfrs.tasks.Retrieval(
            loss=tf.keras.losses.CategoricalCrossentropy(
                from_logits=True, reduction=tf.keras.losses.Reduction.SUM_OVER_BATCH_SIZE),
            temperature=temperature, remove_accidental_hits=True)

    def call(self, queries, labels, candidates, weights=None):
        n = tf.shape(labels)[0]
        keep = tf.random.shuffle(tf.range(n))[: self.max_positions]
        queries = tf.gather(queries, keep)
        labels = tf.gather(labels, keep)
        if weights is not None:
            weights = tf.gather(tf.cast(weights, tf.float32), keep)
            # Padding queries carry weight 0; padding labels must not collide as "hits".
            labels = tf.where(weights > 0, labels, -1 - tf.range(tf.shape(labels)[0], dtype=labels.dtype))
        return self.retrieval(
            query_embeddings=tf.cast(queries, tf.float32),
            candidate_embeddings=tf.cast(tf.gather(candidates, tf.maximum(labels, 0)), tf.float32),
            candidate_sampling_probability=tf.gather(self.probability, tf.maximum(labels, 0)),
            candidate_ids=labels,
            sample_weight=weights,
            compute_metrics=False,
            compute_batch_metrics=False,
        )


def build_task(loss_config, item_counts):
    """The task named by ``loss_config.type`` (``full``, ``sampled``, ``in_batch``)."""
    if loss_config.type == "full":
        return FullSoftmaxTask(loss_config.temperature, loss_config.label_smoothing)
    if loss_config.type == "sampled":
        return SampledSoftmaxTask(item_counts, loss_config.num_negatives, loss_config.sampling_alpha,
                                  loss_config.temperature)
    if loss_config.type == "in_batch":
        return InBatchSoftmaxTask(item_counts, loss_config.temperature, loss_config.max_positions)
    raise ValueError(f"loss.type must be full, sampled or in_batch, got {loss_config.type!r}")
